"""Example SGLang frontend programs that use RelayGen (``python -m programs.<name> --help``)."""
