"""K-Arm backdoor scanning (METHODS.md §2(g) [KA]): pre-screening, bandit scheduler, decision."""
