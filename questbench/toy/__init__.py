"""The QUEST paper's toy example as an experiment: two designs and their statistics."""
