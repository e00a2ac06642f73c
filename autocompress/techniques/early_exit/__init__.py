"""The early_exit technique (``technique.py``) and the exit mechanism it attaches (``policy.py``)."""

from autocompress.techniques.early_exit.policy import ExitPolicy, attach_early_exit, exit_policy, measure_exit_depth
from autocompress.techniques.early_exit.technique import EarlyExit, EarlyExitParams

__all__ = ["EarlyExit", "EarlyExitParams", "ExitPolicy", "attach_early_exit", "exit_policy", "measure_exit_depth"]
