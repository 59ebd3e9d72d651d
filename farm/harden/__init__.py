"""Model hardening (METHODS.md §2(g) [S-L.1], Table 7): adversarial fine-tuning with inverted triggers."""
