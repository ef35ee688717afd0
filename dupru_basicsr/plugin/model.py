"""DUPruModel: BasicSR's SRModel trained with DUPru / UPru / IMP rounds (a thin adapter over dupru_basicsr.pruning).

Set `model_type: DUPruModel` and add a `pruning:` section (see `plugin.pruning_options.PruningConfig`). Everything
else (datasets, losses, EMA, validation, loggers, DDP, resume) is BasicSR's.

Round boundaries happen in `update_learning_rate`, which BasicSR calls first in every iteration: at the first
iteration of round r (r >= 1) the model prunes from the current weights, rewinds, builds a fresh optimizer and LR
schedule (the `train.scheduler` section describes one round) and re-seeds EMA from the rewound weights.

The model needs no help from its training loop (it works under BasicSR's own `train_pipeline`, a checkout's
`basicsr/train.py` and `dupru-train` alike): the `pruning:` section is checked when the model is built; the last
step of every round writes `models/net_g_round{r}_last.pth` (that round's end weights and masks); checkpoints and
`training_states/<iter>.state` (which holds the pruning state) are written atomically; `resume_training` restores
the pruning state and refuses a changed pruning setting (`plugin.pruning_options.check_resume_options`).
"""
import os.path as osp
import torch
from copy import deepcopy

from basicsr.archs import build_network
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import get_dist_info
from basicsr.utils.registry import MODEL_REGISTRY

from dupru_basicsr.plugin.checkpointing import AtomicCheckpointMixin
from dupru_basicsr.plugin.pruning_options import (checked_pruning_config, check_resume_options, pruning_config,
                                                  resume_config)
from dupru_basicsr.plugin.resume import optimizer_steps_on_cpu
from dupru_basicsr.plugin.registry import lookup
from dupru_basicsr.pruning import GradualSchedule, Pruner, RoundSchedule
from dupru_basicsr.utils.devices import use_deterministic_algorithms
from dupru_basicsr.weights.io import atomic_save, remove_stale_temp_files


@MODEL_REGISTRY.register()
class DUPruModel(AtomicCheckpointMixin, SRModel):
    """SRModel with iterative magnitude pruning rounds, EPS-freezing and per-round tickets."""

    reads_pruning_section = True  # the option checks look for this (plugin.option_base.is_pruning_model)

    def __init__(self, opt):
        # Check the pruning: section (and that train.total_iter and network_g fit it) before anything is built, so
        # that a bad section fails at once under any training loop, with the messages of dupru-train's check.
        self.prune_cfg = checked_pruning_config(opt) if opt.get('is_train') else None
        if opt.get('deterministic'):
            # BasicSR's own loop (a checkout's train.py) sets cudnn.benchmark = True before it builds the model
            use_deterministic_algorithms()
        super().__init__(opt)

    def init_training_settings(self):
        # BasicSR pops `type` out of these sections when it builds them; keep pristine copies for the per-round reset.
        self._optim_opt = deepcopy(self.opt['train']['optim_g'])
        self._scheduler_opt = deepcopy(self.opt['train']['scheduler'])
        cfg = self.prune_cfg = self.prune_cfg or pruning_config(self.opt)
        self.pruner = Pruner(self.get_bare_model(self.net_g), cfg.resolve_targets(self.opt['network_g']['type']),
                             cfg.method, cfg.eps, cfg.scope, lookup=lookup, step=cfg.step,
                             granularity=cfg.granularity)
        self.rounds = RoundSchedule(cfg.round_lengths, cfg.rewind_iter)
        # gradual pruning (Zhu & Gupta): one round, masks tighten in place on a cubic sparsity ramp
        self.gradual = GradualSchedule(**cfg.gradual) if cfg.gradual else None
        if cfg.rewind_iter in (None, 0):
            self.pruner.snapshot()  # W0: the initialisation (or the pretrained weights) before any training
        self.round_best = {}  # round -> {'val', 'iter'} of the ticket metric
        self.finetune_lr = None  # rewind: none keeps training at the last LR of the previous round
        super().init_training_settings()
        logger = get_root_logger()
        logger.info(f'Pruning: method {cfg.method}, scope {cfg.scope}, granularity {cfg.granularity}, rewind '
                    f'{cfg.rewind}, rate {cfg.rate:g}%, '
                    f'{cfg.rounds} rounds of {cfg.round_lengths} iterations, eps {cfg.eps}; '
                    f'{len(self.pruner.params)} target tensors, {self.pruner.mask.numel():,d} weights; '
                    f'{self._kept_plan()}.')
        self._warn_about_frequencies(logger)

    def _kept_plan(self):
        """What each round (or the gradual ramp) keeps of the target weights, for the log."""
        if self.gradual is not None:
            g = self.gradual
            return (f'gradual: the targets keep 100% until iteration {g.start_iter}, then every {g.frequency} '
                    f'iterations less, down to {100 * (1 - g.final_sparsity):.2f}% at iteration {g.end_iter}')
        kept = ', '.join(f'{100 * (1 - self.prune_cfg.rate / 100) ** r:.2f}%' for r in range(self.rounds.num_rounds))
        return f'kept share of the targets in rounds 1..{self.rounds.num_rounds}: {kept}'

    def _warn_about_frequencies(self, logger):
        """Say what BasicSR's own loop will and will not keep when val_freq / save_checkpoint_freq do not divide
        the round ends (it validates and saves only at their multiples; dupru-train also does so at round ends)."""
        ends = [s + n for s, n in zip(self.rounds.starts, self.rounds.lengths)]
        val_freq = int(self.opt['val']['val_freq']) if self.opt.get('val') and self.opt['val'].get('val_freq') else 0
        if val_freq and any(e % val_freq for e in ends):
            unvalidated = [r + 1 for r, e in enumerate(ends) if e % val_freq]
            blind = [r + 1 for r, (s, e) in enumerate(zip(self.rounds.starts, ends)) if e // val_freq == s // val_freq]
            logger.warning(
                f'val.val_freq ({val_freq}) does not divide every round end (iterations {ends}). Under BasicSR\'s own '
                f'training loop the end weights of round(s) {unvalidated} are not validated, so their '
                'net_g_round{r}_best.pth is the best of the validations inside the round'
                + (f', and round(s) {blind} are never validated and get no net_g_round{{r}}_best.pth' if blind else '')
                + '. Every round still leaves models/net_g_round{r}_last.pth (its end weights and masks). dupru-train '
                'validates at every round end; or choose a val_freq that divides the round length.')
        save_freq = int(self.opt['logger']['save_checkpoint_freq'])
        if any(e % save_freq for e in ends):
            logger.warning(
                f'logger.save_checkpoint_freq ({save_freq}) does not divide every round end (iterations {ends}). '
                'Under BasicSR\'s own training loop net_g_<iter>.pth and training_states/<iter>.state are not written '
                'at those round ends, so a resume may restart inside a round from the last multiple of it; the '
                'round ends are kept as models/net_g_round{r}_last.pth. dupru-train also saves at every round end.')

    def setup_optimizers(self):
        super().setup_optimizers()
        self.pruner.attach(self.optimizer_g)

    def _reset_optimization(self):
        """Fresh optimizer and LR schedule, as the reference code re-creates its optimizer every round."""
        self.pruner.detach()
        self.opt['train']['optim_g'] = deepcopy(self._optim_opt)
        self.opt['train']['scheduler'] = deepcopy(self._scheduler_opt)
        self.optimizers, self.schedulers = [], []
        self.setup_optimizers()
        self.setup_schedulers()

    def _fresh_state(self, round_idx):
        """A new random initialisation for `rewind: reinit`, identical on every DDP rank and on resume."""
        # The network is built (and initialised) on the CPU, so only the CPU generator is seeded, inside a fork that
        # restores it; torch.manual_seed would also reseed every CUDA generator for good (fork_rng(devices=[]) does
        # not restore those).
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(self.opt.get('manual_seed') or 0) + 7919 * round_idx)
            return build_network(deepcopy(self.opt['network_g'])).to(self.device).state_dict()

    def _start_round(self, round_idx):
        logger = get_root_logger()
        rewind = 'iter' if self.prune_cfg.rewind_iter is not None else self.prune_cfg.rewind
        last_lr = self.get_current_learning_rate()
        while self.rounds.round < round_idx:
            thresholds = self.pruner.prune(self.prune_cfg.rate)
            self.rounds.round += 1
        fresh = self._fresh_state(round_idx) if rewind == 'reinit' else None
        self.pruner.rewind(rewind, fresh)
        self._reset_optimization()
        if rewind == 'none':
            self.finetune_lr = last_lr
        if self.ema_decay > 0:
            self.model_ema(0)  # EMA restarts from the rewound (masked) weights
        stats = self.pruner.stats()
        thr = ', '.join(f'{v:.3e}' for v in thresholds.values() if v is not None)
        logger.info(f'Round {round_idx + 1}/{self.rounds.num_rounds} starts: pruned {self.prune_cfg.rate:g}% of the '
                    f'survivors, rewind {self.prune_cfg.rewind}; target weights kept {stats["kept"]:,d}/'
                    f'{stats["target_numel"]:,d} ({100 * (1 - stats["target_sparsity"]):.2f}%), model sparsity '
                    f'{100 * stats["model_sparsity"]:.2f}%; thresholds: {thr}')
        if get_dist_info()[0] == 0:
            self.pruner.mask.save(osp.join(self.opt['path']['models'], f'masks_round{round_idx + 1}.pth'))

    def _gradual_prune(self, current_iter):
        target = self.gradual.sparsity_at(current_iter)
        self.pruner.prune(sparsity=target)
        if self.ema_decay > 0:
            self.pruner.apply_mask(self.get_bare_model(self.net_g_ema))
        get_root_logger().info(f'Gradual pruning at iter {current_iter}: scheduled sparsity {100 * target:.2f}%, '
                               f'target sparsity {100 * self.pruner.mask.sparsity():.2f}% (of the pruned tensors)')

    def update_learning_rate(self, current_iter, warmup_iter=-1):
        if self.gradual is not None and self.gradual.is_prune_iter(current_iter):
            self._gradual_prune(current_iter)
        if self.rounds.needs_prune(current_iter):
            self._start_round(self.rounds.round_of(current_iter))
        if self.finetune_lr is not None and self.rounds.round > 0:
            self._set_lr([self.finetune_lr])
            return
        # Each round runs the configured LR schedule (and warm-up) from its own first iteration.
        super().update_learning_rate(self.rounds.local_iter(current_iter), warmup_iter)

    def optimize_parameters(self, current_iter):
        # The optimizer hooks keep pruned/frozen entries in place. The EMA needs no masking here: an entry that is
        # 0.0 in both networks stays 0.0 (decay * 0 + (1 - decay) * 0), and it is masked whenever the masks change
        # (round start: copied from the rewound net; gradual prune; resume).
        super().optimize_parameters(current_iter)
        if self.rounds.round == 0 and self.rounds.is_snapshot_iter(current_iter):
            self.pruner.snapshot()  # late rewinding point W_k
        if self.rounds.is_round_end(current_iter):
            self._save_round_last(current_iter)
        self.log_dict['round'] = float(self.rounds.round + 1)
        self.log_dict['target_sparsity'] = self.pruner.mask.sparsity()

    def get_current_log(self):
        # the frozen fraction counts a device buffer (a host sync): only when the log is printed, not every step
        return dict(super().get_current_log(), frozen=self.pruner.frozen_fraction())

    def is_round_end(self, current_iter):
        return self.rounds.is_round_end(current_iter)

    # -------------------------------------------------------------------------------------------- tickets, logs
    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        if not self.is_train or not isinstance(current_iter, int) or self.opt['val'].get('metrics') is None:
            return
        dataset_name = dataloader.dataset.opt['name']
        metric = next(iter(self.opt['val']['metrics']))
        better = self.opt['val']['metrics'][metric].get('better', 'higher')
        value = float(self.metric_results[metric])
        r = self.rounds.round_of(current_iter)
        stats = self.pruner.stats()
        logger = get_root_logger()
        metrics = ', '.join(f'{k} {v:.4f}' for k, v in self.metric_results.items())
        logger.info(f'[round {r + 1}/{self.rounds.num_rounds}] iter {current_iter}: {dataset_name} {metrics}; '
                    f'target sparsity {100 * stats["target_sparsity"]:.2f}% ({len(stats["layer_sparsity"])} tensors: '
                    f'{", ".join(self.pruner.targets)}), model sparsity '
                    f'{100 * stats["model_sparsity"]:.2f}%, frozen {100 * stats["frozen_fraction"]:.2f}%')
        if tb_logger:
            # every scalar against the iteration (TensorBoard's and wandb's time axis; a step that goes back, as the
            # kept share does, breaks both): the metric per round, and the kept share as a scalar of its own
            tb_logger.add_scalar(f'pruning/{dataset_name}/{metric}', value, current_iter)
            tb_logger.add_scalar('pruning/kept_percent', 100 * (1 - stats['target_sparsity']), current_iter)
            tb_logger.add_scalar('pruning/target_sparsity', stats['target_sparsity'], current_iter)
            tb_logger.add_scalar('pruning/round', r + 1, current_iter)
        first_val = next(k for k in self.opt['datasets'] if k.startswith('val'))
        if dataset_name != self.opt['datasets'][first_val]['name']:
            return  # tickets are chosen on the first validation set
        if self.gradual is not None and current_iter < self.gradual.end_iter:
            return  # a gradual run's ticket must have its final sparsity
        best = self.round_best.get(r)
        if best is None or (value >= best['val'] if better == 'higher' else value <= best['val']):
            self.round_best[r] = {'val': value, 'iter': current_iter}
            self._save_ticket(r, current_iter, dataset_name, metric, value)

    def _save_ticket(self, r, current_iter, dataset_name, metric, value):
        self._write_ticket(f'net_g_round{r + 1}_best.pth', r, current_iter, dataset=dataset_name, metric=metric,
                           value=value)

    def _save_round_last(self, current_iter):
        """The weights and masks at the end of a round, whatever the loop validates or saves there."""
        self._write_ticket(f'net_g_round{self.rounds.round + 1}_last.pth', self.rounds.round, current_iter)

    def _write_ticket(self, file_name, r, current_iter, **info):
        """models/<file_name>: stock `params` (and `params_ema`) loadable by BasicSR, plus `keep_masks` and what
        the ticket is (`ticket`); rank 0 only."""
        if get_dist_info()[0] != 0:
            return
        ticket = {'params': self._cpu_state(self.net_g)}
        if self.ema_decay > 0:
            ticket['params_ema'] = self._cpu_state(self.net_g_ema)
        ticket['keep_masks'] = self.pruner.mask.state_dict()
        ticket['ticket'] = {
            'round': r + 1,
            'iter': current_iter,
            **info,
            'kept_fraction': 1 - self.pruner.mask.sparsity(),
            'rewind': self.prune_cfg.rewind,
            'schedule': 'gradual' if self.gradual else 'rounds',
            'method': self.prune_cfg.method,
        }
        atomic_save(ticket, osp.join(self.opt['path']['models'], file_name))

    def _cpu_state(self, net):
        return {k: v.detach().cpu().clone() for k, v in self.get_bare_model(net).state_dict().items()}

    # -------------------------------------------------------------------------------------------- resume
    def training_state(self, epoch, current_iter):
        state = super().training_state(epoch, current_iter)
        state['pruning'] = {
            'pruner': self.pruner.state_dict(),
            'rounds': self.rounds.state_dict(),
            'round_best': {int(k): dict(v) for k, v in self.round_best.items()},
            'finetune_lr': self.finetune_lr,
            'config': resume_config(self.opt, self.prune_cfg),  # checked on resume (check_resume_options)
        }
        return state

    def resume_training(self, resume_state):
        # any loop: refuses a changed pruning setting, lists them all
        check_resume_options(self.opt, resume_state, self.prune_cfg)
        pruning = resume_state['pruning']
        self.rounds.load_state_dict(pruning['rounds'])
        self.pruner.load_state_dict(pruning['pruner'])
        self.round_best = {int(k): v for k, v in pruning['round_best'].items()}
        self.finetune_lr = pruning['finetune_lr']
        optimizer_steps_on_cpu(resume_state)  # a checkout's own train.py loads the state onto the GPU
        super().resume_training(resume_state)
        self.pruner.apply_mask()
        if self.ema_decay > 0:
            self.pruner.apply_mask(self.get_bare_model(self.net_g_ema))
        if get_dist_info()[0] == 0:
            # the resume is accepted: under BasicSR's own loop nobody else removes the temporary files of a save a
            # kill interrupted (dupru-train does so for any model, next, and then finds none)
            folders = [self.opt['path'][k] for k in ('models', 'training_states') if self.opt['path'].get(k)]
            for path in remove_stale_temp_files(*folders):
                get_root_logger().info(f'Removed {path}, left by an interrupted save.')
