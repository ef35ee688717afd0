"""Default pruning targets per BasicSR architecture (used when `pruning.targets` is not given).

The heavy inner layers of each network: its residual body (and the convolution after it), never the first
convolution, the upsampler or the last convolution — they are small, and pruning them costs the most quality. Biases,
normalisation layers, channel attention and position-bias tables are left dense.
"""
from dupru_basicsr.pruning.targets import DEFAULT_TARGETS

TARGET_PRESETS = {
    'MSRResNet': list(DEFAULT_TARGETS),  # the paper's "Basic Block part": 32 of the 37 convolutions (77.7 % of weights)
    'EDSR': ['body.*.weight', 'conv_after_body.weight'],
    'RCAN': ['body.*.rcab.0.weight', 'body.*.rcab.2.weight', 'body.*.conv.weight', 'conv_after_body.weight'],
    'RRDBNet': ['body.*.weight', 'conv_body.weight'],
    'SwinIR': ['layers.*.attn.qkv.weight', 'layers.*.attn.proj.weight', 'layers.*.mlp.fc1.weight',
               'layers.*.mlp.fc2.weight', 'layers.*.conv.weight'],
}


def preset_targets(network_type):
    """Target patterns for a BasicSR `network_g.type`; raises KeyError naming the known presets."""
    try:
        return list(TARGET_PRESETS[network_type])
    except KeyError:
        raise KeyError(f'No pruning target preset for network type "{network_type}" (presets: '
                       f'{", ".join(TARGET_PRESETS)}); set pruning.targets to parameter name patterns, e.g. '
                       f'{list(DEFAULT_TARGETS)}.') from None
