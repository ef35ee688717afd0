"""Pruning target presets per network class (BasicSR's architectures): `pruning.targets: body` (the default) or `whole`;
`Pruner(model, targets="whole")` resolves them by the model's class name.

- `body`: the heavy inner layers of each network — its residual body (and the convolution after it) — never the first
  convolution, the upsampler or the last convolution. The paper's choice for MSRResNet (32 of its 37 convolutions,
  77.7 % of the weights at x4).
- `whole`: every convolution that carries weight mass, the upsampler included. For MSRResNet x4 that adds `upconv1`,
  `upconv2` (each 64 -> 256 channels, 9.7 % of the weights each) and `conv_hr` (2.4 %): 99.6 % of all weights.
  Those layers run at 2x and 4x the input resolution, so at x4 they do more than half of the multiply-adds; a
  runtime with sparse kernels can only speed MSRResNet up when they are sparse too (docs/study.md, bench/README).
  `conv_first` (3 -> 64) and `conv_last` (64 -> 3) stay dense in both presets: 1,728 weights each (0.1 % of the
  weights together), they are the only paths from and to the image's colour channels, and pruning them saves
  nothing measurable.

Biases, normalisation layers, channel attention and position-bias tables are left dense.
"""
# The paper's targets (MSRResNet's "Basic Block part"): what `Pruner` prunes by default, and the MSRResNet preset.
DEFAULT_TARGETS = ('body.*.weight', )

TARGET_PRESETS = {
    'MSRResNet': list(DEFAULT_TARGETS),  # the paper's "Basic Block part": 32 of the 37 convolutions (77.7 % of weights)
    'EDSR': ['body.*.weight', 'conv_after_body.weight'],
    'RCAN': ['body.*.rcab.0.weight', 'body.*.rcab.2.weight', 'body.*.conv.weight', 'conv_after_body.weight'],
    'RRDBNet': ['body.*.weight', 'conv_body.weight'],
    'SwinIR': ['layers.*.attn.qkv.weight', 'layers.*.attn.proj.weight', 'layers.*.mlp.fc1.weight',
               'layers.*.mlp.fc2.weight', 'layers.*.conv.weight'],
}

# `targets: whole`: the body preset plus the upsampler (and, for RRDBNet, its two upsampling and HR convolutions)
WHOLE_TARGET_PRESETS = {
    'MSRResNet': list(DEFAULT_TARGETS) + ['upconv1.weight', 'upconv2.weight', 'conv_hr.weight'],
    'EDSR': ['body.*.weight', 'conv_after_body.weight', 'upsample.*.weight'],
    'RCAN': ['body.*.rcab.0.weight', 'body.*.rcab.2.weight', 'body.*.conv.weight', 'conv_after_body.weight',
             'upsample.*.weight'],
    'RRDBNet': ['body.*.weight', 'conv_body.weight', 'conv_up1.weight', 'conv_up2.weight', 'conv_hr.weight'],
}
PRESET_KINDS = {'body': TARGET_PRESETS, 'whole': WHOLE_TARGET_PRESETS}

# Parameter name prefixes of the two parts of a network that reports count apart (dupru-compare's body and upsampler
# sparsity): the residual body, and the upsampling layers that `whole` adds (MSRResNet / EDSR / RRDBNet)
BODY_PREFIX = 'body.'
UPSAMPLER_PREFIXES = ('upconv', 'conv_hr', 'upsample.', 'conv_up')


def preset_targets(network_type, kind='body'):
    """Target patterns of preset `kind` ('body' or 'whole') for a BasicSR `network_g.type`; raises KeyError naming
    the known presets."""
    presets = PRESET_KINDS[kind]
    try:
        return list(presets[network_type])
    except KeyError:
        raise KeyError(f'No pruning target preset for network type "{network_type}" (`{kind}` presets: '
                       f'{", ".join(presets)}); set pruning.targets to parameter name patterns, e.g. '
                       f'{list(DEFAULT_TARGETS)}.') from None
