"""Fine-tuning data generation as a background job: ``POST /api/v1/fine-tuning/generate`` answers 202 with a job
id; ``GET /api/v1/fine-tuning/jobs/{id}`` gives its progress and, once done, its report. A job writes only under
``M3SEARCH_HOME/finetune/<job id>/`` (never a path the client names), and only when it has finished."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path as FilePath

from fastapi import APIRouter, Path, Request

from m3search.errors import NotFoundError
from m3search.finetune import GenerateOptions, generate, write_output
from m3search.finetune.output import REPORT
from m3search.llm import configured_endpoint
from m3search.retrieval.search import Searcher
from m3search.server.jobs import Progress
from m3search.server.routes.common import ERRORS, service_of
from m3search.server.schemas import FineTuneGenerateIn, FineTuneJobOut
from m3search.server.service import Service

router = APIRouter(prefix="/api/v1/fine-tuning", tags=["fine-tuning"], responses=ERRORS)
JOB_ID = Path(pattern=r"^[0-9a-f]{32}$", description="a fine-tuning job's id")
_KEY = "finetune-{}"  # the job's key among the server's background jobs


def job_dir(service: Service, job_id: str) -> FilePath:
    return service.settings.home / "finetune" / job_id


def job_out(service: Service, job_id: str) -> FineTuneJobOut:
    """The job's state: from the running server, else (after a restart) from what it left on disk."""
    directory = job_dir(service, job_id)
    found = service.jobs.state(_KEY.format(job_id))
    job = replace(found) if found else None  # one moment's copy (the job's thread keeps updating its own)
    report_file = directory / REPORT
    if job is None and not directory.is_dir():
        raise NotFoundError(f"no fine-tuning job {job_id}")
    done = (job is None or job.state == "done") and report_file.is_file()
    state = job.state if job is not None else ("done" if done else "stopped")
    return FineTuneJobOut(id=job_id, state=state, processed=job.embedded if job else 0, total=job.total if job else 0,
                          error=job.error if job else None, output_dir=str(directory),
                          report=json.loads(report_file.read_text(encoding="utf-8")) if done else None)


@router.post("/generate", response_model=FineTuneJobOut, status_code=202)
def start_generate(body: FineTuneGenerateIn, request: Request) -> FineTuneJobOut:
    """Generate fine-tuning data from a collection in the background (see ``m3search finetune generate``)."""
    service = service_of(request)
    target = service.store.active_set(body.collection)  # 404 for an unknown collection, before any work
    endpoint = (configured_endpoint(service.settings, "LLM query generation on this server", model=body.llm.model,
                                    http_how=" when starting it (or generate offline: leave out 'llm')")
                if body.llm is not None else None)
    options = GenerateOptions(body.queries_per_doc, body.validation_split, body.hard_negatives, body.negatives_skip,
                              body.negatives_strategy, body.filter_k, body.seed, endpoint,
                              body.sentence_positive).checked()
    encoder = service.encoder_for_set(target)
    job_id = uuid.uuid4().hex
    directory = job_dir(service, job_id)
    directory.mkdir(parents=True)

    def work(progress: Progress) -> None:
        searcher = Searcher(service.store, encoder, ann_threshold=service.settings.ann_threshold,
                            runtime=service.runtime)
        data = generate(service.store, encoder, body.collection, options, progress=progress, searcher=searcher)
        write_output(data, directory)

    service.jobs.start(_KEY.format(job_id), work)
    return job_out(service, job_id)


@router.get("/jobs/{job_id}", response_model=FineTuneJobOut)
def get_job(request: Request, job_id: str = JOB_ID) -> FineTuneJobOut:
    return job_out(service_of(request), job_id)
