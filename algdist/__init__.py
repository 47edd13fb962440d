"""algdist: Algorithm Distillation in JAX.

Shape letters. Arrays are named with their shapes where it helps
(`obs_HxTxO`, `logits_BxLxA`); every module uses these letters and no other
meanings, so `H` or `S` means the same thing wherever a newcomer meets it.

  A  actions (a bandit's arms are its actions)
  B  batch: training windows, or a source learner's minibatch
  C  KV-cache slots
  D  model width
  E  episodes
  F  feed-forward width
  G  grid side, in cells
  H  histories: one per source actor (its stream of steps)
  I  features out of an observation encoder
  K  attention head width
  L  context steps (the model's window)
  M  attention heads
  N  tasks
  O  observation shape (a pixel frame is O = height x width x 3)
  P  prompts
  Q  tokens per step
  R  rollouts per task (evaluation seeds)
  S  tokens in a model sequence (L x Q)
  T  env steps: of a history, an update's rollout, or an evaluation rollout
  U  updates
  V  side of a top-down view, in pixels
  W  steps the recompute policy re-reads
"""

__version__ = '0.1.0'
