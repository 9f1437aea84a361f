"""Reports read only the results store: leaderboards (md, rich, csv), plots, paired comparisons."""
