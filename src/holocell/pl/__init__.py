"""Plots of holocell results (matplotlib), following scanpy's conventions.

Every function draws into ``ax`` (default: a new figure) and returns the Axes. ``save=`` writes the
figure to a path as PNG, PDF, SVG, PS or EPS (from the extension; formats that cannot carry holocell's mark, such
as JPEG or TIFF, are refused), atomically, and never over a file holocell did not write (a figure it saved before
is replaced); a folder, or a path that ends with a path separator, is refused (``FileExistsError``: pass a file
path inside it, e.g. ``save="figures/plot.png"``). ``save=`` is checked before anything is drawn. Holocell knows its own figures by a hidden
``.holocell_figures.json`` beside them (each figure's name and SHA-256): a figure without that record (copied from
elsewhere, or from a clone of a repository that left the hidden file out) is refused as the user's own; delete
it, or save under another name, to write it again. ``show=`` shows
it, by default unless an ``ax`` or ``save`` was given. A figure the function made itself and saved is closed afterwards (unless it was shown in a window), so
that plots saved in a loop do not stay open; the returned Axes can still be drawn or saved. For embeddings use scanpy's and muon's own plots on holocell's outputs, e.g.
``mu.pl.embedding(mdata, basis="X_umap", color=["celltype"])``.
"""

from ._generation import feature_scores, generated_vs_measured
from ._tools import grn_scores, perturbation
from ._training import training_history, transfer_report

__all__ = [
    "feature_scores",
    "generated_vs_measured",
    "grn_scores",
    "perturbation",
    "training_history",
    "transfer_report",
]
