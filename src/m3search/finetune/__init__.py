"""Fine-tuning: training data generated from an indexed collection (``m3search finetune generate``: queries,
hard negatives mined with the collection's own search, a split by document) and a dense model trained on it
(``m3search finetune train``). Both sides share one :class:`Example` and its JSONL row (:mod:`.examples`)."""

from m3search.finetune.examples import Example, read_examples, write_examples
from m3search.finetune.output import write_output
from m3search.finetune.pipeline import (
    GeneratedData,
    GenerateOptions,
    GenerationReport,
    generate,
    split_documents,
)
from m3search.finetune.queries import ORIGINS, Candidate, Origin, parse_queries
from m3search.finetune.training import TrainParams, TrainResult, train, training_columns

__all__ = ["ORIGINS", "Candidate", "Example", "GenerateOptions", "GeneratedData", "GenerationReport", "Origin",
           "TrainParams", "TrainResult", "generate", "parse_queries", "read_examples", "split_documents", "train",
           "training_columns", "write_examples", "write_output"]
