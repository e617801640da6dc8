"""The tag and version a pretrain checkpoint carries: written by ``pretrain``, read by ``convert``.

    {"format": PRETRAIN_FORMAT, "format_version": PRETRAIN_FORMAT_VERSION, "arch": ..., "backbone": ...}

Defined once, here in the core both packages use, so the writer (:mod:`pretrain.checkpoint`, which
documents the whole record and needs torch) and the reader (:mod:`infomin_det.convert.layouts`,
which must not import ``pretrain``) cannot drift apart. Bump the version when the record changes.
"""

PRETRAIN_FORMAT = "infomin-det/pretrain"
PRETRAIN_FORMAT_VERSION = 1
