"""What a comparison produced, as plain data: per-image and mean rows, model statistics, curves, figures."""
import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np


METRICS = ('psnr_rgb', 'ssim_rgb', 'psnr_y', 'ssim_y')
MEAN_ROW = '(mean)'


@dataclass
class CompareResults:
    """Everything the report shows, as plain data (`to_dict()` is what results.json holds)."""
    models: List[dict]
    datasets: List[dict]
    rows: List[dict]  # per image rows and MEAN_ROW rows: label, method, dataset, image, psnr_rgb, ...
    model_stats: List[dict]
    baseline: Optional[str] = None
    round_curves: Dict[str, List[dict]] = field(default_factory=dict)
    rate_curves: Dict[str, List[dict]] = field(default_factory=dict)
    training_curves: Dict[str, dict] = field(default_factory=dict)
    figures: Dict[str, str] = field(default_factory=dict)
    files: Dict[str, str] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def labels(self):
        return [m['label'] for m in self.models]

    def mean(self, label, dataset, metric='psnr_rgb'):
        """Mean `metric` of run `label` on `dataset`."""
        for row in self.rows:
            if row['label'] == label and row['dataset'] == dataset and row['image'] == MEAN_ROW:
                return row[metric]
        raise KeyError(f'No mean row for {label!r} on {dataset!r}')

    def value(self, label, dataset, image, metric='psnr_rgb'):
        """Per-image `metric` of run `label`."""
        for row in self.rows:
            if row['label'] == label and row['dataset'] == dataset and row['image'] == image:
                return row[metric]
        raise KeyError(f'No row for {label!r} on {dataset!r}/{image!r}')

    def to_dict(self):
        return _json_safe(asdict(self))


def _json_safe(obj):
    """JSON has no NaN / inf (PSNR of identical images is inf): write them as null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _json_safe(obj.item())
    return obj
