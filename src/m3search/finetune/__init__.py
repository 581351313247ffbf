"""Fine-tuning data generated from an indexed collection (``m3search finetune generate``)."""

from m3search.finetune.output import write_output
from m3search.finetune.pipeline import (
    Example,
    GeneratedData,
    GenerateOptions,
    GenerationReport,
    generate,
    split_documents,
)
from m3search.finetune.queries import ORIGINS, Candidate, Origin, parse_queries

__all__ = ["ORIGINS", "Candidate", "Example", "GenerateOptions", "GeneratedData", "GenerationReport", "Origin",
           "generate", "parse_queries", "split_documents", "write_output"]
