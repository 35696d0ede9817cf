"""Imported once by the reward pool's forkserver (``pool._PRELOAD``): the built-in rewards registered and the
LaTeX parser warmed (``symbolic.warm_up``) there, so every worker forked from it starts warm at no cost."""

from megatron_grpo.reward.symbolic import warm_up

warm_up()
