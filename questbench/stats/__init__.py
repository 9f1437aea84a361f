"""Statistics: CE/mCE, intervals and paired tests over per-sample outcomes, and simulations with a known answer. No torch."""
