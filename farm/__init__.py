"""farm: a Ray-distributed benchmark farm for backdoor trigger inversion."""

__version__ = "0.1.0"
