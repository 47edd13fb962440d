"""The command line: flags -> config -> stages.

  python -m algdist.main --config configs/dark_room.py[:PRESET] \
      [--workdir DIR] [--mode all|generate|train|eval|report]
      [--config.FIELD=VALUE ...]

`--mode all` runs the stages in order, skipping a finished stage and resuming
an interrupted one. Stages: generate (learning histories), train (AD and ED
transformers), eval (in-context rollouts and baselines -> eval/results.json),
report (plots and a markdown summary).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time

import jax
import numpy as np
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from algdist import distributed

# A multi-process run starts jax.distributed, and every run its compilation
# cache, before the imports below touch a device (gymnax builds arrays when
# imported); single runs skip the first.
try:
  distributed.initialize_from_env()
except ValueError as e:
  sys.exit(f'FATAL {e}')
distributed.compilation_cache_from_env()

from algdist import (  # noqa: E402
  checkpoints,
  config_lib,
  encoder,
  envs,
  evaluate,
  files,
  histories,
  report,
  train,
)

_CONFIG = config_flags.DEFINE_config_file(
  'config',
  None,
  'Experiment config: configs/<env>.py[:preset].',
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
  'workdir', None, 'Where the run lives; default runs/<config>[-<preset>].'
)
STAGES = ('generate', 'train', 'eval', 'report')
_MODE = flags.DEFINE_enum(
  'mode',
  'all',
  ('all',) + STAGES,
  'Which stage to run; all runs every stage in order.',
)


def default_workdir(config_path: str, preset: str) -> str:
  name = os.path.splitext(os.path.basename(config_path.split(':')[0]))[0]
  return os.path.join(
    'runs', name if preset == 'default' else f'{name}-{preset}'
  )


def config_changes(config, workdir: str) -> dict[str, tuple]:
  """Fields whose value differs from the workdir's config.json: old, new."""
  saved = files.read_json(
    os.path.join(workdir, 'config.json'),
    remedy="It only records the last run's config: delete it and run again.",
  )
  if saved is None:
    return {}
  old, new = config_lib.flatten(saved), config_lib.flatten(config)
  return {
    k: (old.get(k), new.get(k))
    for k in sorted(set(old) | set(new))
    if old.get(k) != new.get(k)
  }


def check_workdir(config, workdir: str) -> dict[str, tuple]:
  """Refuses a workdir whose histories or checkpoints were made with
  another config; returns the changes from its config.json.

  Each stage's output records what it was made from (the manifest its
  dataset spec, each checkpoint its training fingerprint), so a change is
  refused only where a finished output depends on it: a field corrected
  before that stage ran (a bad window size, a learning rate after a NaN
  with no good checkpoint) is accepted, and evaluation settings always are.
  """
  changes = config_changes(config, workdir)
  stale = []
  directory = os.path.join(workdir, 'histories')
  manifest = histories.read_manifest(directory)
  spec = histories.spec_from_config(config).fingerprint()
  if manifest is not None and manifest.get('spec') != spec:
    stale.append(f'the histories in {directory}')
  changed = set()
  for method in train.METHODS:
    found = checkpoints.provenance(workdir, method)
    fields = config_lib.training_fields(config, method)
    differ = checkpoints.changed_fields(found, fields)
    if differ:
      stale.append(
        f'the {method} checkpoints in {checkpoints.directory(workdir, method)}'
      )
      changed.update(differ)
  if stale:
    changed.update(
      f'{k}: {old!r} -> {new!r}'
      for k, (old, new) in changes.items()
      if k.split('.')[0] in ('env', 'source', 'histories')
    )
    lines = ''.join(f'  {line}\n' for line in sorted(changed))
    raise ValueError(
      f'{workdir} holds {" and ".join(stale)}, made with another config'
      + (f':\n{lines}' if lines else '. ')
      + 'Use another --workdir for this one, or delete what was made with '
      'the other.'
    )
  return changes


def write_config(config, workdir: str) -> None:
  """Records the resolved config in the workdir (WORKDIR/config.json)."""
  os.makedirs(workdir, exist_ok=True)
  files.write_text(
    os.path.join(workdir, 'config.json'),
    config.to_json_best_effort(indent=1, sort_keys=True),
  )


def generate_stage(
  config, workdir: str, progress: bool = True, lead: bool = True
) -> dict:
  """The generate stage: the dataset (every process writes its shards),
  then, by the `lead` process, its learning-curve PNG and JSON; returns the
  manifest."""
  spec = histories.spec_from_config(config)
  directory = os.path.join(workdir, 'histories')
  manifest = histories.generate(spec, directory, progress=progress)
  if not lead:
    return manifest
  curve_json = os.path.join(directory, 'learning_curve.json')
  manifest_json = os.path.join(directory, 'manifest.json')
  if os.path.exists(curve_json) and (
    os.path.getmtime(curve_json) >= os.path.getmtime(manifest_json)
  ):
    return manifest  # plotted after the dataset was last written: a rerun
  dataset = histories.load(directory, verify=False)
  history, length = dataset.history, dataset.length
  task_index = dataset.task_index
  title = (
    f'{spec.algorithm} on {spec.env}: {manifest["num_histories"]} '
    'learning histories'
  )
  path = os.path.join(directory, 'learning_curve.png')
  env, params = envs.make(spec.env, **spec.env_overrides)
  plot = getattr(env, 'plot_learning_curve', None)  # gymnax envs have none
  if plot is not None:  # the family's own curve (a bandit's: regret)
    tasks = envs.base.batch_replace(params, **manifest['tasks'])
    summary = plot(history, length, tasks, task_index, title, path)
    files.write_json(os.path.join(directory, 'learning_curve.json'), summary)
    return manifest
  num_episodes = int(np.asarray(history.episode_start).sum(-1).max())
  curve_HxE = np.asarray(
    histories.episode_return_curve(
      history,
      length,
      num_episodes,
      getattr(params, 'max_steps_in_episode', None),
    )
  )
  tasks = envs.base.batch_replace(params, **manifest['tasks'])
  try:
    optimal_H = np.asarray(env.optimal_return(tasks))[task_index]
  except NotImplementedError:
    optimal_H = None
  summary = report.source_learning_curve(curve_HxE, optimal_H, title, path)
  # NaN where no history holds a complete episode: kept, not an error.
  files.write_json(
    os.path.join(directory, 'learning_curve.json'), summary, allow_nan=True
  )
  return manifest


def record_seconds(workdir: str, stage: str, seconds: float, add: bool):
  """Sets (or adds to) a stage's wall time in WORKDIR/seconds.json, which
  results.json reports."""
  path = os.path.join(workdir, 'seconds.json')
  table = files.read_json(path, default={})
  table[stage] = seconds + (table.get(stage, 0.0) if add else 0.0)
  files.write_json(path, table)


# (field, test, what is allowed): ranges checked before anything is written.
_RANGES = (
  ('histories.num_tasks', lambda v: v >= 1, '>= 1'),
  ('histories.learners_per_task', lambda v: v >= 1, '>= 1'),
  ('histories.learners_per_shard', lambda v: v >= 1, '>= 1'),
  ('histories.subsample_every', lambda v: v >= 1, '>= 1'),
  ('data.validation_tasks', lambda v: 0 <= v < 1, 'in [0, 1)'),
  ('train.num_steps', lambda v: v >= 1, '>= 1'),
  ('train.batch_size', lambda v: v >= 1, '>= 1'),
  ('train.learning_rate', lambda v: v > 0, '> 0'),
  ('train.log_every', lambda v: v >= 1, '>= 1'),
  ('train.eval_every', lambda v: v >= 1, '>= 1'),
  ('train.checkpoint_every', lambda v: v >= 1, '>= 1'),
  ('train.keep_checkpoints', lambda v: v >= 1, '>= 1'),
  ('ed.num_steps', lambda v: v >= 0, '>= 0 (0: train.num_steps)'),
  ('evaluation.num_episodes', lambda v: v >= 1, '>= 1'),
  ('evaluation.num_seeds', lambda v: v >= 1, '>= 1'),
  ('evaluation.num_test_tasks', lambda v: v >= -1, '>= 0, or -1 for all'),
  ('evaluation.num_train_tasks', lambda v: v >= -1, '>= 0, or -1 for all'),
  ('evaluation.temperature', lambda v: v >= 0, '>= 0 (0: greedy)'),
)


def validate_config(config) -> None:
  """Raises ValueError (one line: the field, its value, what is allowed)
  for a config no stage could run, before anything is written."""
  if config.env.name.startswith(envs.GYMNAX_PREFIX):
    raise ValueError(
      f"env.name='{config.env.name}': a gymnax environment has no task "
      'distribution (training and held-out tasks, optimal returns) for the '
      f'pipeline; use one of {", ".join(envs.names())}, or wrap it as an '
      'algdist.envs.TaskFamily. Its learners run on it directly '
      '(algdist.agents).'
    )
  fields = config_lib.flatten(config)
  for name, ok, allowed in _RANGES:
    if name in fields and not ok(fields[name]):
      raise ValueError(f'{name}={fields[name]!r}: must be {allowed}.')
  if 'ed' in config.train.methods and config.ed.expert_episodes < 1:
    raise ValueError(
      f'ed.expert_episodes={config.ed.expert_episodes}: must be >= 1 to '
      "train ED (or leave 'ed' out of train.methods)."
    )
  unknown = set(config.train.methods) - set(train.METHODS)
  if unknown:
    raise ValueError(
      f'train.methods has {sorted(unknown)}: use some of {train.METHODS}.'
    )
  unknown = set(config.evaluation.methods) - set(evaluate.METHODS)
  if unknown:
    raise ValueError(
      f'evaluation.methods has {sorted(unknown)}: use some of '
      f'{evaluate.METHODS}.'
    )
  model, _ = config_lib.model_config(config)  # the model's own checks
  train.make_optimizer(config.train)  # warmup within the horizon
  encoder.check(config)  # pretraining needs pixels and the agent's pose
  if config.data.window_steps < model.context_steps:
    raise ValueError(
      f'data.window_steps={config.data.window_steps}: must be >= '
      f'model.context_steps={model.context_steps}.'
    )


def run(config, workdir: str, mode: str = 'all') -> None:
  """Runs `mode` (one stage, or all of them) of the experiment in `workdir`.

  The config is checked before anything is written, and one run at a time
  holds the workdir (`files.workdir_lock`).
  """
  validate_config(config)
  # Process 0 holds the lock for all processes of a multi-host run.
  lock = files.workdir_lock(workdir) if jax.process_index() == 0 else None
  with lock or contextlib.nullcontext():
    _run(config, workdir, mode)


def _stop_if_preempted(before: str) -> None:
  """Between stages: a preemption notice that came since the last check
  (every process checks here alike) stops the run."""
  if checkpoints.preempted():
    checkpoints.stop_for_preemption(
      f'stopped before {before} on a preemption notice: run the same '
      'command to resume.'
    )


def _run(config, workdir: str, mode: str) -> None:
  # In a multi-process run every process computes (training and
  # evaluation are collective), and process 0 alone writes and prints.
  lead = jax.process_index() == 0
  check_workdir(config, workdir)
  results = os.path.join(workdir, 'eval', 'results.json')
  if lead:
    write_config(config, workdir)
  stages = STAGES if mode == 'all' else (mode,)
  if 'generate' in stages:
    manifest = generate_stage(config, workdir, lead=lead)
    if lead:
      _print_histories(manifest, workdir)

  if 'train' in stages:
    for method in config.train.methods:
      _stop_if_preempted(f'training {method}')
      start = time.perf_counter()
      summary = train.train_and_evaluate(config, workdir, method)
      if not lead:
        continue
      if summary['updates_run']:
        seconds = time.perf_counter() - start
        record_seconds(workdir, 'train', seconds, add=True)
      print(
        f'{method}: {summary["step"]} updates, {summary["num_params"]:,} '
        f'parameters, loss {summary.get("loss", float("nan")):.3f}, held-out '
        f'accuracy {summary.get("val_accuracy", float("nan")):.3f} (best '
        'constant action '
        f'{summary.get("val_constant_action_accuracy", float("nan")):.3f})'
      )
    if lead:
      report.training_curves(workdir, config.train.methods)

  if 'eval' in stages or 'report' in stages:
    _stop_if_preempted('evaluation')
    # Results are current when they record what they were made from and
    # that equals what this config and the newest checkpoints are now
    # (computed on every process: it meets barriers).
    remedy = 'Delete it and run --mode eval.'
    recorded = files.read_json(results, remedy=remedy)
    now = evaluate.provenance(config, workdir)
    current = distributed.shared(
      'eval_done', recorded is not None and recorded.get('provenance') == now
    )
    if 'eval' in stages and (mode == 'eval' or not current):
      evaluate.evaluate(config, workdir)
    elif mode == 'report' and recorded is not None and not current:
      raise files.FileError(
        f'{results} was made from another config or other checkpoints than '
        'this run has now; run --mode eval (or --mode all) to bring it up '
        'to date.'
      )
  if 'report' in stages and lead:
    written = report.write_report(workdir)
    with open(written['summary']) as f:
      print(f.read())


def _print_histories(manifest: dict, workdir: str) -> None:
  """Records the generate stage's time and prints how the source learned."""
  # The manifest counts generation time across resumes itself.
  record_seconds(workdir, 'generate', manifest['seconds'], add=False)
  logging.info(
    'Histories: %d x %d steps in %s/histories.',
    manifest['num_histories'],
    manifest['steps_per_history'],
    workdir,
  )
  curve = files.read_json(
    os.path.join(workdir, 'histories', 'learning_curve.json')
  )
  print(
    f'source {manifest["algorithm"]} on {manifest["env"]}: '
    f'{manifest["num_histories"]} histories, first episode '
    f'{curve["mean_first_episode"]:.3f}, last 10 episodes '
    f'{curve["mean_last_10_episodes"]:.3f}'
    + (' of optimal' if curve['normalized'] else '')
    + (
      f', {curve["fraction_of_histories_reaching_90pct"]:.1%} of '
      'histories >= 90% of optimal'
      if 'fraction_of_histories_reaching_90pct' in curve
      else ''
    )
  )


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with an override of a field the config lacks said
  in one line (ml_collections raises it from deep inside, a traceback)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'FATAL Flags parsing error: {e}\n{_HELP}')
  except (KeyError, AttributeError) as e:
    text = str(e).replace('\\n', '\n').replace("\\'", "'")
    names = re.findall(r"'(\w+)'", text)
    hint = re.search(r'Did you mean "(\w+)" instead', text)
    name = names[0] if names else '?'
    culprit = next(
      (
        a.split('=')[0]
        for a in argv
        if a.startswith('--config.') and f'.{name}' in a.split('=')[0]
      ),
      f'--config...{name}',
    )
    sys.exit(
      f"FATAL Flags parsing error: {culprit}: the config has no field '{name}'"
      + (f'; did you mean "{hint.group(1)}"?' if hint else '.')
      + '\nFields and their comments: the config file under configs/ (a '
      f"learner's settings: its Config in algdist/agents/).\n{_HELP}"
    )


_HELP = 'Pass --helpshort or --helpfull to see help on flags.'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    # Progress bars and the summary say what happens; orbax and the loader
    # log every save at INFO. --verbosity=0 brings the log back.
    absl_logging.set_verbosity(absl_logging.WARNING)
  config = _CONFIG.value
  workdir = _WORKDIR.value or default_workdir(
    flags.FLAGS['config'].config_filename, config.preset
  )
  try:
    run(config, workdir, _MODE.value)
  except _USER_ERRORS as e:
    # Bad input and bad files: one line saying what and what to do, no
    # traceback (--verbosity=1 shows it).
    if flags.FLAGS['verbosity'].present:
      raise
    sys.exit(f'FATAL {type(e).__name__}: {e}')
  except checkpoints.Preempted as e:
    print(f'PREEMPTED {e}', file=sys.stderr)
    sys.exit(143)  # 128 + SIGTERM: stopped by its notice, as a job reports


# What a user's config, files or data can cause; anything else is a bug and
# keeps its traceback.
_USER_ERRORS = (
  ValueError,
  FloatingPointError,
  files.FileError,
  histories.DatasetError,
  checkpoints.CheckpointError,
)


if __name__ == '__main__':
  flags.mark_flag_as_required('config')
  app.run(main, flags_parser=parse_flags)
