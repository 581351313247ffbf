"""``m3search search`` (every strategy, with score breakdowns) and ``m3search eval`` (BEIR datasets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from m3search.cli.index import (
    CollectionOption,
    DbOption,
    ModelOption,
    StoreOption,
    collection_encoder,
    encoder_for,
    open_store,
)
from m3search.cli.options import BackendOption, PrecisionOption
from m3search.cli.tune import run_tune
from m3search.errors import InputError
from m3search.retrieval.beir import load_dataset, write_run
from m3search.retrieval.evaluation import EvalReport, evaluate, metric_names, plot
from m3search.retrieval.rerank import RerankerPool
from m3search.retrieval.search import Searcher
from m3search.retrieval.types import DEFAULT_WEIGHTS, STRATEGIES, SearchRequest, SearchResult
from m3search.settings import get_settings
from m3search.store.filters import parse_filter

StrategyOption = Annotated[str, typer.Option("--strategy", "-s", help=f"one of {', '.join(STRATEGIES)}")]
FilterOption = Annotated[list[str] | None, typer.Option("--filter", "-f", help="metadata key=value (repeatable)")]
RrfOption = Annotated[int | None, typer.Option(
    "--rrf-k", help="reciprocal rank fusion constant (hybrid; default: the collection's, else 60)")]
WeightsOption = Annotated[str | None, typer.Option(
    "--weights", help="e.g. dense=0.7,bm25=0.3 (hybrid, weighted, all; hybrid's default: the collection's)")]
FusionOption = Annotated[str | None, typer.Option(
    "--fusion", help="hybrid's fusion: max, dbsf or minmax (scores), rrf (ranks); default: the collection's")]
CandidatesOption = Annotated[int, typer.Option("--candidates", help="depth of each retriever in fusions/reranks")]
CoarseDimOption = Annotated[int | None, typer.Option("--coarse-dim", help="Matryoshka dimension (two_stage)")]
CoarseKOption = Annotated[int, typer.Option("--coarse-k", help="candidates of the first stage (two_stage)")]
RerankOption = Annotated[str | None, typer.Option(
    "--rerank", help="rerank the first stage's candidates: a cross-encoder (models list --rerankers) or 'llm'")]
RerankKOption = Annotated[int, typer.Option("--rerank-k", help="first-stage candidates the reranker reorders")]
GroupByOption = Annotated[str, typer.Option(
    "--group-by", help="document: one hit per document (its best chunk, other matching chunks listed); chunk: every "
                       "matching chunk")]
LLMUrlOption = Annotated[str | None, typer.Option(
    "--llm-url", help="OpenAI-compatible chat endpoint for --rerank llm (default: M3SEARCH_LLM_URL)")]
LLMModelOption = Annotated[str | None, typer.Option(
    "--llm-model", help="the endpoint's model for --rerank llm (default: M3SEARCH_LLM_MODEL)")]


def parse_weights(text: str | None) -> dict[str, float] | None:
    """``dense=0.4,sparse=0.2`` -> a dict; :class:`InputError` for anything else."""
    if text is None:
        return None
    weights = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or name.strip() not in DEFAULT_WEIGHTS:
            raise InputError(f"--weights is name=number,... with names {', '.join(DEFAULT_WEIGHTS)}; not {part!r}")
    return weights


def make_request(strategy: str, k: int, filters: list[str] | None, rrf_k: int | None, weights: str | None,
                 candidates: int, coarse_dim: int | None, coarse_k: int, fusion: str | None = None,
                 rerank: str | None = None, rerank_k: int = 50, group_by: str = "document") -> SearchRequest:
    grouped: dict[str, list[Any]] = {}
    for key, value in (parse_filter(f) for f in filters or []):
        grouped.setdefault(key, []).append(value)  # a key given twice matches either value
    chosen = {key: values[0] if len(values) == 1 else values for key, values in grouped.items()}
    request = SearchRequest(strategy, k, chosen or None, rrf_k, parse_weights(weights),  # type: ignore[arg-type]
                            candidates, coarse_dim, coarse_k, fusion, rerank=rerank,  # type: ignore[arg-type]
                            rerank_k=rerank_k, group_by=group_by)  # type: ignore[arg-type]
    return request.checked()[0]


def _describe(result: SearchResult) -> None:
    console = Console(highlight=False)
    fusion = result.details.get("fusion")
    how = ""
    if fusion is not None:  # hybrid: which fusion, and whether it is the collection's tuned one
        weights = ", ".join(f"{n}={w:g}" for n, w in result.details.get("weights", {}).items())
        how = f" ({fusion}: {weights}{'; tuned' if 'tuned' in result.details else ''})"
    console.print(f"[bold]{result.strategy}[/]{how} over {', '.join(result.retrievers)} in {result.collection} "
                  f"({result.took_ms:.1f} ms)", markup=True)
    for rank, hit in enumerate(result.hits, start=1):
        parts = "  ".join(f"{name} #{c.rank} {c.score:.4g}" for name, c in hit.breakdown.items())
        console.print(f"{rank:>2}. {hit.score:.4f} [bold]{hit.document_id}[/]  [dim]{parts}[/]", markup=True)
        console.print("    " + hit.text.replace("\n", " ")[:110], markup=False)
        if hit.other_chunks:
            places = ", ".join(f"#{c.ordinal} {c.score:.4g}" for c in hit.other_chunks[:5])
            more = f" (+{len(hit.other_chunks) - 5})" if len(hit.other_chunks) > 5 else ""
            console.print(f"    [dim]also matches chunks {places}{more}[/]")
    rerank = result.details.get("rerank")
    if isinstance(rerank, dict) and rerank.get("status") == "failed-open":
        console.print(f"[yellow]rerank by {rerank['by']} failed open (first-stage order kept): "
                      f"{rerank.get('reason')}[/]")


def search(
    collection: CollectionOption,
    query: Annotated[str | None, typer.Argument(help="the query (leave it out with --image)")] = None,
    image: Annotated[Path | None, typer.Option(
        "--image", help="image->image: search an image collection with this image file (strategy dense)")] = None,
    strategy: StrategyOption = "hybrid",
    k: Annotated[int, typer.Option("--k", help="hits")] = 10,
    filters: FilterOption = None,
    rrf_k: RrfOption = None,
    fusion: FusionOption = None,
    weights: WeightsOption = None,
    candidates: CandidatesOption = 100,
    coarse_dim: CoarseDimOption = None,
    coarse_k: CoarseKOption = 100,
    rerank: RerankOption = None,
    rerank_k: RerankKOption = 50,
    group_by: GroupByOption = "document",
    llm_url: LLMUrlOption = None,
    llm_model: LLMModelOption = None,
    model: ModelOption = None,
    db: DbOption = None,
    store_url: StoreOption = None,
    backend: BackendOption = None,
    precision: PrecisionOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Search a collection (the query is embedded with the model the collection was built with)."""
    if image is None and not (query or "").strip():
        raise InputError("the query is empty (or search an image collection with --image PATH)")
    if image is not None and query:
        raise InputError("give a query text or --image, not both")
    if image is not None and strategy == "hybrid":
        strategy = "dense"  # image queries search dense vectors only: the default strategy becomes dense
    request = make_request(strategy, k, filters, rrf_k, weights, candidates, coarse_dim, coarse_k, fusion,
                           rerank, rerank_k, group_by)
    overrides = {key: value for key, value in (("llm_url", llm_url), ("llm_model", llm_model)) if value}
    rerankers = RerankerPool(get_settings(**overrides))
    if request.rerank is not None:
        rerankers.check(request.rerank)  # before the store opens and the model loads
    with open_store(db, store_url) as store:
        encoder, _ = collection_encoder(store, collection, model, backend, precision, False)
        searcher = Searcher(store, encoder, rerankers=rerankers)
        result = (searcher.search_image(collection, image, request) if image is not None
                  else searcher.search(collection, query or "", request))
    if as_json:
        typer.echo(json.dumps(result.as_dict(), ensure_ascii=False))
    else:
        _describe(result)


def _print_report(report: EvalReport) -> None:
    table = Table(title=f"{report.dataset}: {report.model}, {report.documents} documents ({report.chunks} chunks), "
                        f"{report.queries} queries", title_justify="left")
    table.add_column("strategy")
    for name in metric_names(report.k):
        table.add_column(name, justify="right")
    table.add_column("queries/s", justify="right")
    best = {m: max(s.metrics[m] for s in report.scores) for m in metric_names(report.k)}
    for score in report.scores:
        cells = [f"[bold]{v:.4f}[/]" if v == best[m] else f"{v:.4f}" for m, v in score.metrics.items()]
        table.add_row(score.strategy, *cells, f"{report.queries / max(score.seconds, 1e-9):.0f}")
    Console(highlight=False).print(table)


def run_path(path: Path, strategy: str, many: bool) -> Path:
    """Where ``--save-run PATH`` writes a strategy's run: inside an existing directory ``PATH/STRATEGY.trec``; else
    ``PATH`` itself for one strategy, ``run.STRATEGY.trec`` beside it for several (``PATH`` = ``run.trec``)."""
    if path.is_dir():
        return path / f"{strategy}.trec"
    return path.with_name(f"{path.stem}.{strategy}{path.suffix}") if many else path


def eval_command(
    dataset: Annotated[Path, typer.Argument(help="a BEIR directory: corpus.jsonl, queries.jsonl, qrels/test.tsv")],
    model: ModelOption = None,
    strategy: Annotated[str, typer.Option("--strategy", "-s", help="comma-separated")] = "bm25,dense,hybrid",
    k: Annotated[int, typer.Option("--k", help="cutoff of nDCG and MRR")] = 10,
    queries: Annotated[Path | None, typer.Option("--queries", help="other queries.jsonl (cross-lingual)")] = None,
    db: Annotated[Path | None, typer.Option("--db", help="index into this database (default: a temporary one)")]
    = None,
    collection: Annotated[str | None, typer.Option("--collection", "-c", help="collection (default eval-NAME)")]
    = None,
    rrf_k: RrfOption = None,
    fusion: FusionOption = None,
    weights: WeightsOption = None,
    coarse_dim: CoarseDimOption = None,
    tune: Annotated[bool, typer.Option(
        "--tune", help="choose hybrid's fusion on these queries (cross-validated) and save it with the collection")]
    = False,
    folds: Annotated[int, typer.Option("--folds", help="--tune: folds of the cross-validation over queries")] = 5,
    save: Annotated[bool, typer.Option("--save/--no-save", help="--tune: save the choice as the collection's default "
                                       "(needs --db; only if it beats the settings before)")] = True,
    backend: BackendOption = None,
    precision: PrecisionOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    plot_file: Annotated[Path | None, typer.Option("--plot", help="draw a bar chart (PNG)")] = None,
    save_run: Annotated[Path | None, typer.Option(
        "--save-run", help="write TREC run file(s): FILE (FILE.STRATEGY.trec for several), or DIR/STRATEGY.trec")]
    = None,
) -> None:
    """Evaluate strategies on a BEIR dataset: nDCG@k, MRR@k, Recall@100, MAP (pytrec_eval); with --tune, choose
    hybrid's fusion on its queries (k-fold cross-validated) and save it as the collection's default."""
    strategies = [s.strip() for s in strategy.split(",") if s.strip()]
    request = make_request(strategies[0] if strategies else "", k, None, rrf_k, weights, 100, coarse_dim, 100,
                           fusion)
    data = load_dataset(dataset, queries=queries)
    encoder = encoder_for(model, backend, precision, False)
    if tune:
        run_tune(data, encoder, k=k, folds=folds, db=db, collection=collection, save=save, as_json=as_json)
        return
    console = Console(stderr=True)
    report = evaluate(data, encoder, strategies, k=k, db=db, collection=collection, request=request,
                      progress=lambda s: console.print(f"running {s}", highlight=False))
    if save_run is not None:
        for score in report.scores:
            write_run(run_path(save_run, score.strategy, len(report.scores) > 1), score.run, score.strategy)
    if plot_file is not None:
        plot(report, plot_file)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_report(report)
