"""InfoMin pretraining: fast InfoMin augmentation, MoCo v2 with InfoMin heads, linear evaluation.

Owns everything that produces a self-describing pretrain checkpoint (``"format":
"infomin-det/pretrain"``) that ``infomin-det convert`` reads. Never imports detectron2.

    pretrain.decode      every Pillow image mode as 8-bit RGB (16-bit, float, EXIF orientation, ...)
    pretrain.augment     the InfoMin recipe: fast uint8 pipeline + plain torchvision reference
    pretrain.data        image folders (ImageNet layout or flat), corrupt files skipped and counted
    pretrain.model       ResNet/ResNeXt backbones (torchvision key names), MoCo v2 + JigSaw heads
    pretrain.checkpoint  the checkpoint format, atomic save, resume (weights-only loads)
    pretrain.device      device / local-process decisions, autocast dtype
    pretrain.limits      range checks of every number a spec takes
    pretrain.outdir      the -o directory: checked up front, never left behind empty
    pretrain.train       ``PretrainSpec`` and ``pretrain_worker`` (one process of a run)
    pretrain.linear_eval frozen-backbone linear classifier, top-1 / top-5 (the paper's protocol)
    pretrain.probe       linear probe on frozen features (L-BFGS), used by pretrain.views and run_probe
    pretrain.run_probe   ``--probe``: that probe of the query encoder during pretraining, probe.jsonl
    pretrain.cli         ``infomin-det pretrain``
"""
