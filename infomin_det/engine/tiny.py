"""Overrides that shrink any protocol's Mask / Faster R-CNN to a run of seconds on one CPU core.

For tests, benchmarks and smoke runs (with ``infomin_det.data.tiny_coco``): ResNet widths / 4, FPN
and heads 32-64 channels, 96-128 px inputs, 32 RoIs per image, no loader workers and no linear
scaling (``SOLVER.REFERENCE_WORLD_SIZE 0``: the batch is exactly ``SOLVER.IMS_PER_BATCH``). Add
``SOLVER.MAX_ITER`` and the periods you need. Not a protocol: its APs mean nothing.
"""

TINY: tuple[str, ...] = (
    "MODEL.RESNETS.WIDTH_PER_GROUP", "16", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.RESNETS.STEM_OUT_CHANNELS", "16", "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.ROI_BOX_HEAD.CONV_DIM", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "32", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
    "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128", "INPUT.MIN_SIZE_TEST", "96",
    "INPUT.MAX_SIZE_TEST", "128", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.REFERENCE_WORLD_SIZE", "0",
    "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "1", "TEST.PRECISE_BN.NUM_ITER", "1",
    "DATALOADER.NUM_WORKERS", "0",
)


def tiny(*extra: str) -> tuple[str, ...]:
    """``TINY`` with the ``KEY VALUE`` pairs of ``extra`` added or replacing TINY's own."""
    pairs = dict(zip(TINY[::2], TINY[1::2]))
    pairs.update(zip(extra[::2], extra[1::2]))
    return tuple(x for kv in pairs.items() for x in kv)
