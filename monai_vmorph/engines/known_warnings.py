"""The one place where MONAI warnings that are noise to monai-vmorph's users are filtered.

Each filter matches one warning by category and the start of its message (and, where the warning names it, the
module that issues it), never a whole category:

* MONAI's bundle security notice, a ``UserWarning`` that ``monai.bundle.run`` issues for every config file:
  ``parsing config_file [...]: any `"_target_"` value in it is resolved to an importable callable ...``. The
  bundles' configs are this project's own; the notice stays for any other config only if the caller does not use
  :func:`quiet_known_warnings`. ``monai.bundle.run`` issues it before a config's ``initialize`` runs, so the
  configs' call silences it for later runs in the same process only; the command line calls it at start-up.
* MONAI's own deprecation of an argument it still passes itself, a ``FutureWarning`` from
  ``monai.utils.deprecate_utils`` at every Hausdorff-distance computation (each validation and evaluation):
  ``monai.metrics.utils get_mask_edges:always_return_as_numpy: Argument `always_return_as_numpy` has been
  deprecated since version 1.5.0 ...``. Nothing a user does changes it.
"""

from __future__ import annotations

import warnings

__all__ = ["KNOWN_WARNINGS", "quiet_known_warnings"]

# (message regex matched at the start of the message, category, issuing module regex or "" for any)
KNOWN_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (r"parsing config_file .*any `\"_target_\"` value in it is resolved", UserWarning, ""),
    (
        r"monai\.metrics\.utils get_mask_edges:always_return_as_numpy: Argument `always_return_as_numpy`",
        FutureWarning,
        r"monai\.utils\.deprecate_utils",
    ),
)


def quiet_known_warnings() -> None:
    """Ignore the warnings listed in :data:`KNOWN_WARNINGS` in this process (idempotent).

    Called from the bundles' ``initialize`` lists and by the command line; every other warning is untouched.
    """
    for message, category, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
