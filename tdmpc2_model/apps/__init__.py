"""The command lines and the programs on top of the library: the CLIs, plots, the paper's
published curves and the quickstart."""
