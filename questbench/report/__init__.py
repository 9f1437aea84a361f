"""Reports read only the results store: aggregation (tables, compare, checks), the leaderboard's sections and their
renderers (markdown, terminal, tidy csv, html, plots), and the RobustBench export."""
