"""lm-eval results: read by the suite's task tree, normalized as the Open LLM Leaderboard does, stored for ever."""
