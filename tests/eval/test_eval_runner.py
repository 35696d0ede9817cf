"""evaluate() over a fake rollout engine: prompts sent, samples graded, metrics per set."""


import pytest

from megatron_grpo.config import DataConfig, EvalConfig, EvalSetConfig, SamplingConfig
from megatron_grpo.data import BOXED_SUFFIX
from megatron_grpo.eval import default_answer_key, evaluate, grade_with, load_eval_sets
from megatron_grpo.reward.scorer import RewardScorer
from megatron_grpo.rollout.types import Sample
from tests.shared_data import DATA as SHARED
from tests.shared_data import qwen3_tokenizer


class FakeEngine:
    """Answers problem i of the prompts it gets correctly in its first ``i % (n + 1)`` samples."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, sampling, seed):
        self.calls.append((prompts, sampling, seed))
        answers = [["RIGHT" if j < i % (sampling.n + 1) else f"w{j % 2}" for j in range(sampling.n)]
                   for i in range(len(prompts))]
        return [[Sample([1], [0.0], f"... so \\boxed{{{a}}}", "stop") for a in row] for row in answers]


def grade(responses, truths):
    """Stand-in grader: correct when the boxed answer is RIGHT (the fake engine knows no math)."""
    return [r.endswith("{RIGHT}") for r in responses]


@pytest.fixture(scope="module")
def eval_sets():
    tokenizer = qwen3_tokenizer()
    cfg = EvalConfig(sets=[EvalSetConfig("aime24", str(SHARED / "eval" / "aime24.jsonl")),
                           EvalSetConfig("amc23", str(SHARED / "eval" / "amc23.jsonl"))], max_problems=5)
    return load_eval_sets(cfg, DataConfig(prompt_template="boxed"), tokenizer), tokenizer


def test_eval_sets_use_the_training_prompt_format(eval_sets):
    sets, tokenizer = eval_sets
    assert [(s.name, len(s.dataset)) for s in sets] == [("aime24", 5), ("amc23", 5)]
    first = sets[0].dataset[0]
    assert first.record.ground_truth == "204" and first.record.data_source == "aime24"
    assert tokenizer.decode(first.prompt_ids) == (
        f"<|im_start|>user\n{first.record.problem}{BOXED_SUFFIX}<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_evaluate_grades_every_sample_and_summarizes_per_set(eval_sets):
    sets, _ = eval_sets
    engine, sampling = FakeEngine(), SamplingConfig(n=4, temperature=0.7, top_p=0.95)
    result = evaluate(engine, sets, sampling, k=4, grade=grade, seed=11)
    [(prompts, used, seed)] = engine.calls
    assert prompts == [it.prompt_ids for s in sets for it in s.dataset.items]
    assert used is sampling and seed == 11
    # problem i (over both sets) has i % 5 correct samples of 4: 0,1,2,3,4 then again 0,1,2,3,4
    assert [sum(o.correct) for o in result.outcomes] == [0, 1, 2, 3, 4] * 2
    right, w0, w1 = (default_answer_key(f"\\boxed{{{a}}}") for a in ("RIGHT", "w0", "w1"))
    assert result.outcomes[1].answers == [right, w1, w0, w1] and len({right, w0, w1}) == 3
    per_problem_mean = [c / 4 for c in (0, 1, 2, 3, 4)]
    m = result.metrics
    assert m.per_set["aime24"]["mean@4"] == pytest.approx(sum(per_problem_mean) / 5)
    assert m.per_set["amc23"]["pass@4"] == pytest.approx(4 / 5)
    # votes per problem: 0 RIGHT -> wrong; 1 RIGHT vs 2 w1 -> wrong; 2, 3, 4 RIGHT -> right
    assert m.per_set["aime24"]["maj@4"] == m.per_set["amc23"]["maj@4"] == pytest.approx(3 / 5)
    assert m.problems == {"aime24": 5, "amc23": 5} and m.overall == pytest.approx(m.macro)
    assert result.samples == []   # keep=0


def test_evaluate_keeps_readable_samples_of_each_set(eval_sets):
    sets, _ = eval_sets
    result = evaluate(FakeEngine(), sets, SamplingConfig(n=4), k=4, grade=grade, keep=2)
    # the first response to the first 2 problems of each set; problem 1 of each set has its 1 RIGHT first
    assert [(r["kind"], r["index"], r["reward"], r["answer"]) for r in result.samples] == [
        ("val/aime24", "60", 0.0, default_answer_key("\\boxed{w0}")),
        ("val/aime24", "61", 1.0, default_answer_key("\\boxed{RIGHT}")),
        ("val/amc23", sets[1].dataset[0].record.index, 0.0, default_answer_key("\\boxed{w0}")),
        ("val/amc23", sets[1].dataset[1].record.index, 1.0, default_answer_key("\\boxed{RIGHT}"))]
    first = result.samples[0]
    assert first["prompt"] == sets[0].dataset[0].text and first["response"] == "... so \\boxed{w0}"
    assert (first["ground_truth"], first["length"], first["finish_reason"]) == ("204", 1, "stop")


def test_k_above_samples_is_refused(eval_sets):
    sets, _ = eval_sets
    with pytest.raises(ValueError, match="exceeds the samples per problem"):
        evaluate(FakeEngine(), sets, SamplingConfig(n=2), k=4, grade=grade)


class FakeScorer:
    def __init__(self):
        self.sources, self.modes, self.functions = [], [], []

    def score(self, responses, ground_truths, data_sources, use_function, mode):
        self.sources.append(data_sources)
        self.modes.append(mode)
        self.functions.append(use_function)
        return [1.0 if r.endswith(f"{{{t}}}") else -1.0 for r, t in zip(responses, ground_truths, strict=True)]


def test_grade_with_a_reward_scorer():
    scorer = FakeScorer()
    grade = grade_with(scorer, correct_score=1.0)
    assert grade(["\\boxed{3}", "\\boxed{4}", "none"], ["3", "3", "3"]) == [True, False, False]
    assert scorer.sources == ["math"] and scorer.modes == ["lenient"]  # evaluation grades leniently by default
    assert scorer.functions == [False]  # and with the math checker, never a user reward function


class OracleEngine:
    """Sample 0 states the ground truth, sample 1 a wrong number, as the real grader must tell apart."""

    def __init__(self, eval_sets):
        self.truth = {tuple(it.prompt_ids): it.record.ground_truth for s in eval_sets for it in s.dataset.items}

    def generate(self, prompts, sampling, seed):
        return [[Sample([1], [0.0], f"Thus \\boxed{{{a}}}.", "stop")
                 for a in (self.truth[tuple(p)], int(self.truth[tuple(p)]) + 1)] for p in prompts]


def test_evaluate_with_the_real_reward_scorer(eval_sets):
    sets, _ = eval_sets
    with RewardScorer(workers=1, timeout_s=10.0) as scorer:
        result = evaluate(OracleEngine(sets), sets, SamplingConfig(n=2), k=2, grade=grade_with(scorer))
    assert all(o.correct == [True, False] for o in result.outcomes)
    assert result.metrics.overall == {"mean@2": 0.5, "pass@1": 0.5, "pass@2": 1.0, "maj@1": 0.5, "maj@2": 0.5}
