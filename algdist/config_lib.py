"""Config sections every experiment shares: model, data, training, sharding.

Experiment files (configs/<env>.py) call these with their own numbers, so
each field's meaning and unit is written once, here. Library code reads the
resulting ConfigDict only in `main.py` and the stage entry points
(`train.train_and_evaluate`, ...), never below them; `model_config` turns
the config into the frozen `ModelConfig` that training, checkpoints and
evaluation build the same model from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from algdist import agents, envs
from algdist import model as model_lib


def source(algorithm: str, **settings) -> ml_collections.ConfigDict:
  """A learner section (`source`, `evaluation.rl_baseline`): `algorithm` and
  every setting of its Config, the ones in `settings` changed.

  Every setting is present, not only the changed ones, so that any of them
  can be overridden from the command line (`--config.source.config.X=V`);
  each is documented on its Config in algdist/agents/<module>.py. A setting
  the algorithm does not have is a ValueError naming its settings.
  """
  algorithm_config, _ = agents.get(algorithm, **settings)
  fields = dataclasses.asdict(algorithm_config)
  # The bandit module serves two algorithms through one field; here the
  # section's `algorithm` names it, once.
  fields.pop('algorithm', None)
  c = ml_collections.ConfigDict()
  c.algorithm = algorithm  # see algdist.agents.names()
  c.config = ml_collections.ConfigDict(fields)  # its Config's settings
  return c


def optimistic_q_learning(
  *, num_steps: int, initial_value: float = 1.0, **settings
) -> ml_collections.ConfigDict:
  """The dark grid worlds' RL source (issue 18; RESULTS.md): tabular
  Q-learning whose values start optimistic (the greedy policy tries what it
  has not, so early episodes explore systematically from reward alone),
  step size 1, discount 0.9, bootstrapping through the time limit (so the
  learners end optimal), epsilon 0.2 -> 0 over 80% of `num_steps`."""
  return source(
    'q_learning',
    num_steps=num_steps,
    learning_rate=1.0,
    discount=0.9,
    epsilon_start=0.2,
    epsilon_end=0.0,
    epsilon_decay_fraction=0.8,
    initial_value=initial_value,
    bootstrap_truncated=True,
    **settings,
  )


def model(
  *,
  context_steps: int,
  num_layers: int = 4,
  num_heads: int = 4,
  d_model: int = 64,
  d_ff: int = 256,
  dropout: float = 0.1,
  attention_dropout: float = 0.0,
  layout: str = 'step',
  norm: str = 'pre',
) -> ml_collections.ConfigDict:
  """The causal transformer (algdist/model.py)."""
  c = ml_collections.ConfigDict()
  # 'step': one token per env step (o_t, a_{t-1}, r_{t-1}); 'triple': the
  # paper-style o, a, r tokens (three times the tokens for the same context).
  c.layout = layout
  c.context_steps = context_steps  # env steps the model sees (window length)
  c.num_layers = num_layers  # transformer blocks
  c.num_heads = num_heads  # attention heads per block
  c.d_model = d_model  # residual stream width
  c.d_ff = d_ff  # feed-forward hidden width
  c.dropout = dropout  # probability, residual and embedding dropout
  c.attention_dropout = attention_dropout  # probability, on attention weights
  c.norm = norm  # 'pre' or 'post' LayerNorm (the paper: post)
  c.dtype = 'auto'  # compute dtype: auto = bfloat16 on GPU/TPU, float32 on CPU
  # jax.nn.dot_product_attention implementation: None lets JAX choose (cuDNN
  # on GPUs where shapes allow), 'xla' or 'cudnn' force one.
  c.attention_impl = ml_collections.config_dict.placeholder(str)
  # (features, kernel, stride) per layer of the pixel encoder (image
  # observations only); the default suits 72x96 frames.
  c.conv_layers = model_lib.CONV_LAYERS
  # Pose-regression pretraining of the pixel encoder (algdist/encoder.py):
  # updates (0 = none), views per update, Adam's step size, whether the
  # encoder then stays fixed while AD and ED train, and whether a fixed
  # encoder's outputs are computed once per frame before training, so that
  # updates read them instead of the frames (the same model, the conv net
  # out of every update).
  c.encoder = ml_collections.ConfigDict(
    dict(
      pretrain_steps=0,
      batch_size=256,
      learning_rate=1e-3,
      freeze=False,
      cache_embeddings=False,
      seed=0,
    )
  )
  return c


def data(
  *, window_steps: int, validation_tasks: float = 0.1
) -> ml_collections.ConfigDict:
  """How histories become training windows (algdist/input_pipeline.py)."""
  c = ml_collections.ConfigDict()
  # Env steps per training window, >= model.context_steps: longer windows
  # train the sliding-window attention that cached evaluation runs.
  c.window_steps = window_steps
  # Fraction of the dataset's (training) tasks whose histories are held out
  # to measure validation loss; they never reach training.
  c.validation_tasks = validation_tasks
  c.num_validation_windows = 512  # windows in the fixed validation set
  # Probability that a training window starts at its history's first step
  # (ED: its first expert step): the empty context every evaluation rollout
  # starts from, which uniform starts almost never show the model. Matters
  # for a source whose first episodes are the same on every task (coverage).
  c.first_window_prob = 0.0
  c.seed = 0  # seeds the validation split and windows
  # 'device': dataset on the accelerator, windows gathered inside jit;
  # 'stream': windows read from the memory-mapped shards by a grain loader;
  # 'auto': device when the training histories fit in max_device_mb.
  c.placement = 'auto'
  c.max_device_mb = 2048  # MiB, threshold of placement='auto'
  c.num_threads = 8  # grain reader threads (placement='stream')
  c.verify = True  # check every shard's sha256 before training
  return c


def train(
  *,
  num_steps: int,
  batch_size: int = 128,
  learning_rate: float = 3e-4,
  warmup_steps: int = 500,
) -> ml_collections.ConfigDict:
  """Optimisation (algdist/train.py); paper values where known."""
  c = ml_collections.ConfigDict()
  c.num_steps = num_steps  # updates
  c.batch_size = batch_size  # windows per update, over all devices
  c.learning_rate = learning_rate  # peak of the cosine schedule
  c.init_learning_rate = 2e-6  # at step 0, rising linearly to the peak
  c.end_learning_rate = 2e-6  # at the last step
  c.warmup_steps = warmup_steps  # updates of linear warmup
  c.weight_decay = 1e-4  # AdamW decoupled decay, per update x lr
  c.b1 = 0.9  # Adam beta1
  c.b2 = 0.99  # Adam beta2 (the paper's)
  c.grad_clip = 1.0  # global gradient-norm clip
  c.seed = 0  # seeds parameters, dropout and training windows
  c.log_every = 100  # updates between metric rows
  c.eval_every = 500  # updates between validation passes
  c.checkpoint_every = 1000  # updates between checkpoints
  c.keep_checkpoints = 2  # newest checkpoints kept
  c.methods = ('ad', 'ed')  # what --mode train trains: AD, and ED the control
  return c


def ed(
  *, expert_episodes: int, num_steps: int = 0
) -> ml_collections.ConfigDict:
  """Expert Distillation: the same model on expert episodes only."""
  c = ml_collections.ConfigDict()
  # The last this many episodes of each history count as expert episodes.
  c.expert_episodes = expert_episodes
  # ED's updates (warmup scaled alike); 0 = train.num_steps.
  c.num_steps = num_steps
  return c


def sharding() -> ml_collections.ConfigDict:
  """The device mesh and how logical axes map onto it (algdist/sharding.py)."""
  c = ml_collections.ConfigDict()
  c.mesh_shape = (-1,)  # devices per mesh axis; -1 takes all that remain
  c.mesh_axes = ('data',)  # mesh axis names
  # Hybrid mesh (several TPU slices or GPU nodes): granules (slices, else
  # processes) per mesh axis, e.g. (2, 1) with mesh_axes ('replica',
  # 'data'): data parallel across 2 granules over the slow network, FSDP
  # within each; mesh_shape then counts the devices of one granule. () = one.
  c.dcn_mesh_shape = ()
  # Logical axis -> mesh axis. 'data' shards the batch and, FSDP-style, the
  # feed-forward weights; logical names not listed are replicated.
  c.rules = (('batch', 'data'), ('mlp', 'data'))
  return c


def evaluation(*, num_episodes: int) -> ml_collections.ConfigDict:
  """In-context evaluation with frozen weights (algdist/evaluate.py)."""
  c = ml_collections.ConfigDict()
  c.num_episodes = num_episodes  # in-context episodes per rollout
  c.num_test_tasks = -1  # held-out tasks evaluated; -1 = all of them
  c.num_train_tasks = 16  # training tasks evaluated, for comparison
  c.num_seeds = 5  # rollouts per task, each from an empty context
  # Softmax temperature of action sampling; 0 = greedy (which fails to
  # explore). Choose it on training tasks, never on held-out ones.
  c.temperature = 1.0
  c.seed = 0  # seeds rollouts
  # Evaluate a model whose training stopped short of train.num_steps (its
  # results are marked partial); by default such a model is refused.
  c.allow_partial = False
  # What to evaluate: the distilled models, and the baselines on the same
  # tasks and episode axis.
  c.methods = ('ad', 'ed', 'source', 'random')
  # 'rl_baseline': an RL learner run from scratch on the same tasks, for a
  # source that is not one (noise distillation knows the optimal policy, so
  # its curve says nothing of how fast RL learns). Same shape as `source`
  # (set it with `source(...)`); add 'rl_baseline' to `methods` to run it.
  c.rl_baseline = ml_collections.ConfigDict()
  c.rl_baseline.algorithm = ''  # see algdist.agents.names(); '' = none
  c.rl_baseline.config = ml_collections.ConfigDict()  # its Config's settings
  return c


def resolve_dtype(name: str) -> str:
  """'auto' -> bfloat16 on accelerators, float32 on CPU (no bf16 units)."""
  if name != 'auto':
    return name
  return 'float32' if jax.default_backend() == 'cpu' else 'bfloat16'


def model_config(
  config,
) -> tuple[model_lib.ModelConfig, jax.ShapeDtypeStruct]:
  """The model of an experiment (config.model plus what the env dictates),
  and the env's observation shape and dtype."""
  env, params = envs.make(config.env.name, **config.env.overrides.to_dict())
  obs = jax.eval_shape(lambda: env.reset(jax.random.key(0), params)[0])
  if obs.ndim == 3 and obs.dtype == jnp.uint8:
    encoder, vocab = 'conv', 0
  elif jnp.issubdtype(obs.dtype, jnp.integer):
    space = env.observation_space(params)
    encoder, vocab = 'embed', int(np.max(np.asarray(space.high))) + 1
  else:
    encoder, vocab = 'dense', 0
  m = config.model
  cfg = model_lib.ModelConfig(
    num_actions=int(env.action_space(params).n),
    obs_encoder=encoder,
    obs_vocab=vocab,
    layout=m.layout,
    context_steps=m.context_steps,
    num_layers=m.num_layers,
    num_heads=m.num_heads,
    d_model=m.d_model,
    d_ff=m.d_ff,
    dropout=m.dropout,
    attention_dropout=m.attention_dropout,
    norm=m.norm,
    dtype=resolve_dtype(m.dtype),
    attention_impl=m.attention_impl,
    conv_layers=tuple(tuple(int(v) for v in layer) for layer in m.conv_layers),
    freeze_encoder=bool(m.encoder.freeze),
  )
  cfg.validate()
  if encoder == 'conv':
    cfg.conv_output(*obs.shape[:2])  # the stack fits the frame
  return cfg, obs


def flatten(config) -> dict:
  """{'section.field': value} of a ConfigDict (as its JSON record has it)
  or of such a record read back (a dict)."""

  def walk(tree, prefix):
    if not isinstance(tree, dict):
      return {prefix: tree}
    out = {}
    for key, value in tree.items():
      out.update(walk(value, f'{prefix}.{key}' if prefix else key))
    return out

  if not isinstance(config, dict):
    config = json.loads(config.to_json_best_effort())
  return walk(config, '')


# Fields that say how a run is carried out, not what it computes: changing
# one changes no history, weight or score, so no stage reruns for it.
BOOKKEEPING = (
  'train.methods',
  'train.log_every',
  'train.eval_every',
  'train.checkpoint_every',
  'train.keep_checkpoints',
  'data.verify',
  'data.num_threads',
  'data.num_validation_windows',
)


def fields(config, sections: tuple[str, ...]) -> dict:
  """The fields of `sections`, bookkeeping left out: what a stage that
  reads only those sections computes from."""
  return {
    k: v
    for k, v in flatten(config).items()
    if k.split('.')[0] in sections and k not in BOOKKEEPING
  }


def fingerprint(config, sections: tuple[str, ...]) -> str:
  """A hash of `fields`: equal fingerprints, equal outputs."""
  text = json.dumps(fields(config, sections), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


# What a trained model depends on (ED also on the `ed` section).
TRAINING_SECTIONS = ('env', 'source', 'histories', 'model', 'data', 'train')


def training_fields(config, method: str) -> dict:
  """What a checkpoint of `method` records and is checked by."""
  return fields(config, TRAINING_SECTIONS + (('ed',) if method == 'ed' else ()))


def load_config(name: str, preset: str | None = None):
  """configs/<name>.py's get_config(preset), from the repository checkout
  (for tools other than the command line: the bench, aot)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = os.path.join(root, 'configs', f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'configs.{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)
