"""Running a suite: prepare, plan, execute, merge, the output folder, torchrun ranks."""
