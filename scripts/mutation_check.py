#!/usr/bin/env python3
"""Mutation check: do the tests notice when the product is broken in the ways that matter? (issue 22)

Each mutant below is a textual edit of one source file that breaks one promise of the product (a model that
ignores clicks, a session that overwrites pins, …), with the tests that must notice it. The script

1. copies the repository's files (tracked and untracked, not ignored: the working tree as it is now, other
   people's uncommitted edits included; ``--rev REV`` takes a commit instead) to a temporary folder — the
   real working tree is never written;
2. checks that every mutant's original snippet occurs exactly once in its file (else it stops with exit 2,
   naming the mutant: the table must follow the source, it cannot go stale silently);
3. runs all named tests once on the unmutated copy (they must pass: a mutant is only killed by a test that
   passes without it);
4. for each mutant: writes it into the copy, runs ``python -m pytest -q -x <its node ids>`` there with
   ``PYTHONPATH=<copy>/src``, restores the file; the mutant is *killed* when pytest reports a failing test
   (exit 1); a mutant that does not compile, or tests that cannot be collected, is an error;
5. prints ``mutant | killed by | result`` and exits 1 when any mutant survived or errored (0 when all are killed).

Usage (from the repository root; GUI-free, but napari is imported, so a display helps)::

    xvfb-run -a python scripts/mutation_check.py                 # every mutant, ~5-10 min on 2 CPU cores
    xvfb-run -a python scripts/mutation_check.py --only session-overwrites-pins cache-ignores-labels
    python scripts/mutation_check.py --list                      # the table, nothing run
    python scripts/mutation_check.py --check-snippets            # step 2 only (what tests/test_mutation_check.py runs)
    python scripts/mutation_check.py --rev HEAD                  # the committed tree instead of the working tree

``--keep`` leaves the temporary copy in place; ``--timeout S`` bounds each pytest run (default 900 s).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = "src/napari_interactive_landmarks"


@dataclass(frozen=True)
class Mutant:
    id: str
    what: str  # the promise it breaks
    file: str  # relative to the repository root
    original: str  # must occur exactly once in ``file``
    mutated: str
    tests: tuple[str, ...]  # pytest node ids (relative to the repository root) that must fail under it


MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "model-ignores-clicks",
        "the interactive model's hint maps (clicks + previous prediction) are zeroed in forward",
        f"{PKG}/models/interactive.py",
        "        hints, channels = hint_inputs(self, image, hints, clicks, clicked, previous)\n"
        "        stem_hint = self.hint_fusion(hints, channels) if self.hint_fusion is not None else None\n"
        "        l1, feats = self.backbone(image, stem_hint)\n",
        "        hints, channels = hint_inputs(self, image, hints, clicks, clicked, previous)\n"
        "        hints = torch.zeros_like(hints)  # MUTANT: clicks ignored\n"
        "        stem_hint = self.hint_fusion(hints, channels) if self.hint_fusion is not None else None\n"
        "        l1, feats = self.backbone(image, stem_hint)\n",
        ("tests/test_training.py::test_a_click_improves_the_unclicked_corners_of_the_shipped_spine_model",
         "tests/test_predictor.py::test_shipped_models_predict_as_before_the_model_drew_its_own_click_maps"),
    ),
    Mutant(
        "session-overwrites-pins",
        "LandmarkSession.apply takes the prediction's coordinates for every point, pinned ones included",
        f"{PKG}/inference/session.py",
        "        coords[free] = pred.coords[free]\n",
        "        coords = pred.coords.copy()  # MUTANT: pins overwritten\n",
        ("tests/test_session.py::test_the_session_keeps_pinned_points_even_when_the_model_moves_them",
         "tests/test_session.py::test_a_prediction_never_overwrites_a_pinned_point"),
    ),
    Mutant(
        "cache-ignores-labels",
        "the preprocessing cache key leaves out the landmarks (an edited label reuses the stale entry)",
        f"{PKG}/data/cache.py",
        "    h.update(np.ascontiguousarray(np.asarray(sample.coords, np.float64)).tobytes())\n",
        "    pass  # MUTANT: labels not in the cache key\n",
        ("tests/test_data_cache_keys.py::test_an_edited_label_reaches_the_next_training_set",),
    ),
    Mutant(
        "weights-hash-trusts-mtime",
        "verify_file answers from a per-process cache keyed by path, size and mtime",
        f"{PKG}/weights.py",
        "    path = Path(path)\n"
        "    actual = sha256_file(path)\n",
        "    path = Path(path)\n"
        "    _st = path.stat()  # MUTANT: per-process hash cache keyed by size + mtime\n"
        "    _cache = globals().setdefault('_MUTANT_HASH_CACHE', {})\n"
        "    _key = (str(path.resolve()), _st.st_mtime_ns, _st.st_size)\n"
        "    if _key not in _cache:\n"
        "        _cache[_key] = sha256_file(path)\n"
        "    actual = _cache[_key]\n",
        ("tests/test_weights.py::test_a_file_edited_in_place_with_its_size_and_time_kept_is_refused",),
    ),
    Mutant(
        "harm-rate-off-by-one-click",
        "others_delta charges click n with the change caused by click n - 1 (so harm_rate is one click late)",
        f"{PKG}/evaluation/metrics.py",
        "        d = errors[n, ~done] - errors[n - 1, ~done]\n",
        "        d = errors[n - 1, ~done] - errors[max(n - 2, 0), ~done]  # MUTANT: one click late\n",
        ("tests/test_training_infra.py::test_others_delta_and_harm_rate_on_a_constructed_case",),
    ),
    Mutant(
        "ere-without-temperatures-predictor",
        "the Predictor's ERE is read from untempered doubt maps (the model's temperatures ignored)",
        f"{PKG}/inference/predictor.py",
        "        tempered = tempered_logits(logits.float(), self.temperatures)\n        if env is not None:\n",
        "        tempered = tempered_logits(logits.float(), None)  # MUTANT: temperatures ignored\n        if env is not None:\n",
        ("tests/test_predictor.py::test_model_without_temperatures_uses_t_equal_one",
         "tests/test_predictor.py::test_the_ere_is_the_closed_form_on_the_softmax_of_logits_over_temperature"),
    ),
    Mutant(
        "ere-without-temperatures-codec",
        "tempered_logits returns the logits as they are whatever the temperatures (maps, ERE, prior decode)",
        f"{PKG}/codecs/uncertainty.py",
        "    if temperatures is None:\n"
        "        return logits\n"
        "    return logits / _temperatures(temperatures, logits.shape[-3], logits)[:, None, None]\n",
        "    return logits  # MUTANT: temperatures ignored\n",
        ("tests/test_uncertainty.py::test_softmax_maps_sum_to_one_and_temperature_and_types",
         "tests/test_predictor.py::test_model_without_temperatures_uses_t_equal_one"),
    ),
    Mutant(
        "region-area-spacing-not-squared",
        "evaluate's region areas in mm² multiply px² by a scalar spacing once (ISBI: 10× too large)",
        f"{PKG}/evaluation/protocol.py",
        "            a2 = 1.0 if spacing is None else float(np.prod(np.broadcast_to(np.asarray(spacing, np.float64), 2)))\n",
        "            a2 = 1.0 if spacing is None else float(np.prod(np.asarray(spacing, np.float64)))  # MUTANT\n",
        ("tests/test_evaluation.py::test_region_areas_in_mm2_use_the_square_of_a_scalar_pixel_spacing",),
    ),
    Mutant(
        "reader-images-by-extension",
        "the napari reader claims images by extension only (an extensionless DICOM gets no reader)",
        f"{PKG}/napari/_reader.py",
        "    if suffix != \".json\" and sniff_format(p) in _SNIFFED_IMAGE_FORMATS:\n"
        "        return read_image_layer\n",
        "",
        ("tests/test_napari_reader_sniff.py::test_extensionless_dicom_is_read",),
    ),
    Mutant(
        "reader-json-by-substring",
        "the napari reader claims any JSON whose first 64 KiB mention the schema id",
        f"{PKG}/napari/_reader.py",
        "    return isinstance(d, dict) and d.get(\"schema\") == SCHEMA_ID\n",
        "    return SCHEMA_ID in raw[:_PEEK_BYTES].decode(\"utf-8\", \"replace\")  # MUTANT: substring\n",
        ("tests/test_napari_reader_sniff.py::test_json_that_only_mentions_the_schema_is_not_claimed",),
    ),
    Mutant(
        "reader-manifest-claims-everything",
        "the manifest offers the reader every file (\"*\"): napari then asks which plugin for every .npy",
        f"{PKG}/napari/napari.yaml",
        "        - \"*.csv\"\n",
        "        - \"*.csv\"\n        - \"*\"  # MUTANT\n",
        ("tests/test_napari_reader_sniff.py::test_manifest_offers_dotless_names_but_not_other_formats",),
    ),
    Mutant(
        "prior-rounds-ignore-the-click",
        "the shape prior's joint rounds after a click take the clicked landmark where its map peaks, not where the "
        "user put it",
        f"{PKG}/inference/predictor.py",
        "                        now[idx] = placed\n",
        "                        pass  # MUTANT: the user's point left out of the joint rounds\n",
        ("tests/test_shape_model.py::test_after_a_click_the_joint_rounds_hold_the_users_point_and_stay_on_the_maps",),
    ),
    Mutant(
        "prior-moves-the-click",
        "the posterior's decoded position replaces the user's point",
        f"{PKG}/inference/predictor.py",
        "            coords[i] = pos  # a user's point is never moved\n",
        "            pass  # MUTANT: the user's point moved by the decoding\n",
        ("tests/test_shape_model.py::test_a_click_far_outside_every_training_shape_moves_no_other_landmark_off_its_map",),
    ),
    Mutant(
        "ere-from-the-posterior",
        "under the shape prior the ERE is the posterior's own spread again (it ranked real errors worse)",
        f"{PKG}/inference/predictor.py",
        "            doubt = self._doubt_maps(logits[0], clicks, shape, tempered)\n",
        "            doubt = self._doubt_maps(logits[0], clicks, shape, tempered) if posterior is None else "
        "softmax_maps(posterior)"
        "  # MUTANT: the posterior's ERE\n",
        ("tests/test_shape_model.py::test_under_the_prior_the_ere_is_the_networks_expected_error_about_the_points_shown",),
    ),
    Mutant(
        "no-hold-without-the-prior",
        "the network alone jitters every landmark after a click again (the card's interaction.hold ignored)",
        f"{PKG}/inference/predictor.py",
        "            hold = self.shape_model.settings.hold if posterior is not None else self.hold\n",
        "            hold = self.shape_model.settings.hold if posterior is not None else 0.0  # MUTANT\n",
        ("tests/test_shape_model.py::test_without_the_prior_the_cards_hold_keeps_the_networks_small_moves_and_the_"
         "priors_own_hold_rules_under_it",),
    ),
    Mutant(
        "refiner-resume-forgets-its-random-stream",
        "a resumed refiner run draws other crops than the run it continues (not the run it would have been)",
        f"{PKG}/training/refiner.py",
        "        rng.bit_generator.state = st[\"numpy_rng\"]\n",
        "        pass  # MUTANT\n",
        ("tests/test_refiner.py::test_a_refiner_run_killed_inside_an_epoch_resumes_to_the_weights_of_an_unbroken_run",),
    ),
    Mutant(
        "label-order-ignored",
        "a run asking for anatomically ordered targets trains on the published, partly swapped ones",
        f"{PKG}/training/trainer.py",
        "        if self.cfg[\"label_order\"] == \"anatomical\":\n",
        "        if False:  # MUTANT\n",
        ("tests/test_label_order.py::test_the_trainer_reorders_the_training_targets_only",),
    ),
    Mutant(
        "doubt-without-envelope",
        "the doubt maps are the network's map alone: a chain end's far echo makes its ERE absurd (issue 34)",
        f"{PKG}/inference/predictor.py",
        "        self.envelope_weight = ENVELOPE_WEIGHT\n",
        "        self.envelope_weight = 0.0  # MUTANT: no anatomy in the doubt\n",
        ("tests/test_ere_calibration.py::test_a_chain_ends_echo_at_the_films_other_end_does_not_make_its_expected_error_absurd",
         "tests/test_trust.py::test_the_chains_ends_state_an_error_like_their_real_one"),
    ),
    Mutant(
        "ere-cap-ignored",
        "the stated ERE is never capped at the landmark's real errors (issue 34)",
        f"{PKG}/ere_calibration.py",
        "            stated = np.minimum(s * powered + (self.film_term(powered, r) if film else 0.0), np.maximum(q, raw))\n",
        "            stated = s * powered + (self.film_term(powered, r) if film else 0.0)  # MUTANT: no cap\n",
        ("tests/test_ere_calibration.py::test_the_stated_error_is_scaled_per_landmark_and_click_count_and_capped",),
    ),
    Mutant(
        "ere-film-term-ignored",
        "a film whose points the model doubts together states no more than one whose doubt is scattered (issue 34)",
        f"{PKG}/ere_calibration.py",
        "        a = self.film_terms[row]\n        if a == 0:\n",
        "        a = self.film_terms[row]\n        if True:  # MUTANT: no film term\n",
        ("tests/test_ere_calibration.py::test_a_film_whose_points_the_model_doubts_together_states_its_joint_error",),
    ),
    Mutant(
        "check-next-reads-film-term",
        "\"check next\" ranks a film's points by their stated error with the film's term in it (issue 34)",
        f"{PKG}/inference/predictor.py",
        "        gain = self._expected_gain(ere_own, clicks) if ere is not None else None\n",
        "        gain = self._expected_gain(ere, clicks) if ere is not None else None  # MUTANT\n",
        ("tests/test_ere_calibration.py::test_check_next_ranks_a_films_points_by_their_own_doubt_not_the_films_term",),
    ),
    Mutant(
        "no-exclusion-around-clicks",
        "after a click another corner may be decoded onto the clicked one (issue 34's collapse)",
        f"{PKG}/inference/predictor.py",
        "            base = tempered if keep_out is None else tempered + keep_out\n",
        "            base = tempered  # MUTANT: no exclusion zone\n",
        ("tests/test_trust.py::test_a_correction_does_not_pull_another_corner_onto_itself",),
    ),
    Mutant(
        "regions-last-row-for-every-count",
        "the regions of 1+ clicks use the 0-click radius (which click count's radius a prediction uses)",
        f"{PKG}/regions.py",
        "        return radii[min(max(int(num_clicks), 0), len(radii) - 1)]\n",
        "        return radii[0]  # MUTANT: one radius for every click count\n",
        ("tests/test_trust.py::test_the_regions_hold_at_every_click_count",),
    ),
    Mutant(
        "unfamiliar-film-regions-not-widened",
        "a film unlike the calibration films keeps the 95 % regions (issue 34: a shift detected, not acted on)",
        f"{PKG}/inference/session.py",
        "        if self.unfamiliar and cal is not None and cal.wide_radii is not None:",
        "        if False:  # MUTANT: never widened",
        ("tests/test_familiarity.py::test_a_film_of_another_hospital_is_flagged_its_regions_widened_and_the_file_says_so",),
    ),
    Mutant(
        "after-click-member-answer-taken-as-is",
        "after a click the one ensemble member's answer replaces the ensemble's instead of moving it (issue 39)",
        f"{PKG}/inference/predictor.py",
        "            coords = full0 + (coords - member0)\n",
        "            coords = coords  # MUTANT: the member's answer as it is\n",
        ("tests/test_familiarity.py::test_after_a_click_one_member_runs_and_the_points_it_does_not_concern_keep_the_full_models_answer",),
    ),
    Mutant(
        "network-alone-decodes-onto-the-click",
        "without the shape prior, another landmark may be decoded onto a clicked one (issue 34's collapse, isbi-ceph)",
        f"{PKG}/inference/predictor.py",
        "            if zones is not None and not prior_on and self.heatmap == \"softmax\":\n",
        "            if False:  # MUTANT: no exclusion zone for the network alone\n",
        ("tests/test_familiarity.py::test_the_network_alone_decodes_no_landmark_onto_a_clicked_one",),
    ),
    Mutant(
        "check-next-by-ere-only",
        "check next ranks by the ERE and ignores the expected gain (issue 34)",
        f"{PKG}/inference/session.py",
        "        key = (g if g is not None else e).astype(np.float64)\n",
        "        key = e.astype(np.float64)  # MUTANT: the gain ignored\n",
        ("tests/test_session.py::test_check_next_ranks_by_the_expected_gain",),
    ),
    Mutant(
        "chain-labels-out-of-order",
        "vertebra labels placed without the chain's order (issue 34)",
        f"{PKG}/label_placement.py",
        "    z = isotonic_regression(anchors[:, 0] - offsets).x  # consecutive rows ≥ a line apart, in order\n",
        "    z = anchors[:, 0] - offsets  # MUTANT: no ordered stacking\n",
        ("tests/test_label_placement.py::test_vertebra_labels_read_in_order_beside_their_own_vertebra_with_short_uncrossed_leaders",),
    ),
    Mutant(
        "hold-axes-swapped",
        "the hold measures a move with the row and column cell sizes swapped (films whose cells are not square)",
        f"{PKG}/inference/predictor.py",
        "        step = np.hypot((coords[:, 0] - previous[:, 0]) / sy, (coords[:, 1] - previous[:, 1]) / sx)\n",
        "        step = np.hypot((coords[:, 0] - previous[:, 0]) / sx, (coords[:, 1] - previous[:, 1]) / sy)  # MUTANT\n",
        ("tests/test_predictor.py::test_the_hold_measures_a_move_in_cells_of_each_axis_on_a_film_whose_cells_are_not_square",),
    ),
    Mutant(
        "region-angle-sign-flipped",
        "a region's angle is stated clockwise instead of counter-clockwise (only tilted ellipses show it)",
        f"{PKG}/regions.py",
        "    angle = np.degrees(np.arctan2(-major[..., 0], major[..., 1]))\n",
        "    angle = np.degrees(np.arctan2(major[..., 0], major[..., 1]))  # MUTANT: clockwise\n",
        ("tests/test_regions.py::test_a_tilted_region_states_its_angle_counter_clockwise_from_the_column_axis_and_exports_it",),
    ),
    Mutant(
        "cobb-doubt-ends-not-mapped",
        "with vertebrae left out, a Cobb doubt's plausible end vertebrae stay indices among the kept ones (names shift)",
        f"{PKG}/measurements/core.py",
        "                b = replace(b, ends=np.asarray(kept)[b.ends])  # end vertebrae as indices in the whole spine\n",
        "                pass  # MUTANT: ends not mapped back\n",
        ("tests/test_cobb_plausible.py::test_the_doubt_of_an_angle_names_the_same_vertebrae_when_an_inner_vertebra_is_left_out",),
    ),
    Mutant(
        "study-change-not-saved",
        "a drag on a study's film is not written to the store until the film is left (a killed viewer loses it)",
        f"{PKG}/study.py",
        "        with self._io:\n            self._save_film(i, session)\n",
        "        with self._io:\n            return  # MUTANT: nothing saved on a change\n            self._save_film(i, session)\n",
        ("tests/test_study.py::test_films_are_listed_opened_corrected_and_saved_at_once",
         "tests/test_study.py::test_a_killed_process_loses_nothing_and_the_study_resumes_where_it_was"),
    ),
    Mutant(
        "study-corrupt-index-overwritten",
        "a study index that cannot be read is replaced by a fresh one (the user's statuses lost) instead of refused",
        f"{PKG}/study.py",
        "            if not recover:\n                last = f\"; its last good copy is {backup}\" if backup.is_file() else \"; there is no earlier copy\"\n",
        "            if False:  # MUTANT: never refused\n                last = f\"; its last good copy is {backup}\" if backup.is_file() else \"; there is no earlier copy\"\n",
        ("tests/test_study.py::test_a_corrupted_index_is_refused_never_overwritten_and_recovered_on_request",),
    ),
    Mutant(
        "finetune-trains-on-held-aside-films",
        "the films held aside to measure the adapted model are trained on too (its figures flatter it)",
        f"{PKG}/finetune.py",
        "    split_text = json.dumps({\"train\": train_names, \"val\": aside_names,",
        "    split_text = json.dumps({\"train\": train_names + aside_names, \"val\": aside_names,  # MUTANT",
        ("tests/test_finetune.py::test_finetune_adapts_the_networks_keeps_the_rest_and_records_its_lineage",),
    ),
)


# --------------------------------------------------------------------------------------------------


class StaleSnippet(RuntimeError):
    pass


def copy_tree(dest: Path, rev: str | None) -> None:
    """The repository's files (working tree, or ``rev``) into ``dest``; the repository is only read."""
    if rev:
        data = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev], check=True,
                              capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            tf.extractall(dest, filter="data")
        return
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "-c", "-o", "--exclude-standard"],
                         check=True, capture_output=True).stdout
    for rel in sorted({r for r in out.decode().split("\0") if r}):
        src = REPO / rel
        if not src.is_file():  # deleted in the working tree, or a submodule
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def check_snippets(root: Path, mutants=MUTANTS) -> list[str]:
    """Problems with the table against the files under ``root`` (empty: every original occurs exactly once)."""
    problems = []
    for m in mutants:
        f = root / m.file
        if not f.is_file():
            problems.append(f"{m.id}: {m.file} does not exist")
            continue
        n = f.read_text(encoding="utf-8").count(m.original)
        if n != 1:
            problems.append(f"{m.id}: the original snippet occurs {n} times in {m.file} (expected once):\n"
                            + "".join(f"      | {line}\n" for line in m.original.splitlines()))
        for t in m.tests:
            if not (root / t.split("::")[0]).is_file():
                problems.append(f"{m.id}: test file {t.split('::')[0]} does not exist")
    return problems


def _env(root: Path, pycache: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONPYCACHEPREFIX"] = str(pycache)  # fresh per run: never a stale .pyc of another mutant
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("NAPARI_LANDMARKS_SHARED", str(REPO.parent / "shared"))
    return env


def run_pytest(root: Path, node_ids, *, stop_first: bool, timeout: float, tag: str) -> tuple[int, str, float]:
    pycache = Path(tempfile.mkdtemp(prefix=f"pyc-{tag}-", dir=root.parent))
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-p", "no:randomly"]
    if stop_first:
        cmd.append("-x")
    cmd += list(node_ids)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=root, env=_env(root, pycache), capture_output=True, text=True,
                              timeout=timeout)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out = 124, f"timed out after {timeout:.0f} s\n{exc.stdout or ''}"
    finally:
        shutil.rmtree(pycache, ignore_errors=True)
    return rc, out, time.monotonic() - t0


_OUTCOME = re.compile(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS) (\S+)", re.M)


def outcomes(output: str) -> dict[str, str]:
    """node id → outcome, from pytest's ``-rA`` summary (skipped tests name no node id: absent)."""
    return {node: word for word, node in _OUTCOME.findall(output)}


def _failing_test(output: str) -> str:
    for word, node in _OUTCOME.findall(output):
        if word in ("FAILED", "ERROR"):
            return node
    return "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="ID", help="run these mutants only")
    ap.add_argument("--list", action="store_true", help="print the table and exit")
    ap.add_argument("--check-snippets", action="store_true", help="only check the snippets against the source")
    ap.add_argument("--rev", help="use this commit instead of the working tree")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per pytest run (default 900)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = ap.parse_args(argv)

    mutants = MUTANTS
    if args.only:
        unknown = set(args.only) - {m.id for m in MUTANTS}
        if unknown:
            ap.error(f"unknown mutant(s) {sorted(unknown)}; known: {[m.id for m in MUTANTS]}")
        mutants = tuple(m for m in MUTANTS if m.id in args.only)
    if args.list:
        for m in mutants:
            print(f"{m.id}: {m.what}\n    {m.file}\n    killed by: {', '.join(m.tests)}")
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="mutation-check-"))
    root = tmp / "repo"
    root.mkdir()
    try:
        copy_tree(root, args.rev)
        problems = check_snippets(root, mutants)
        if problems:
            print("mutation_check: the table no longer matches the source (fix MUTANTS):", file=sys.stderr)
            for p in problems:
                print("  " + p, file=sys.stderr)
            return 2
        if args.check_snippets:
            print(f"all {len(mutants)} snippets found once ({'rev ' + args.rev if args.rev else 'working tree'})")
            return 0

        # baseline: the named tests pass on the unmutated copy
        all_tests = list(dict.fromkeys(t for m in mutants for t in m.tests))
        print(f"baseline: {len(all_tests)} test ids on the unmutated copy …", flush=True)
        rc, out, secs = run_pytest(root, all_tests, stop_first=False, timeout=args.timeout, tag="baseline")
        base = outcomes(out)
        print(f"  pytest exit {rc} in {secs:.0f} s", flush=True)

        def passes_unmutated(test: str) -> bool:
            got = [o for node, o in base.items() if node == test or node.startswith(test + "[")
                   or node.startswith(test + "::")]
            return bool(got) and all(o == "PASSED" for o in got)

        rows = []
        for m in mutants:
            f = root / m.file
            original_text = f.read_text(encoding="utf-8")
            bad_base = [t for t in m.tests if not passes_unmutated(t)]
            if bad_base:
                rows.append((m.id, ", ".join(bad_base), "NOT RUN: named test fails/skips without the mutant"))
                continue
            mutated_text = original_text.replace(m.original, m.mutated, 1)
            if f.suffix == ".py":
                try:
                    compile(mutated_text, str(f), "exec")
                except SyntaxError as exc:
                    rows.append((m.id, "-", f"ERROR: mutant does not compile ({exc.msg}, line {exc.lineno})"))
                    continue
            print(f"mutant {m.id} …", flush=True)
            f.write_text(mutated_text, encoding="utf-8")
            try:
                rc, out, secs = run_pytest(root, m.tests, stop_first=True, timeout=args.timeout, tag=m.id)
            finally:
                f.write_text(original_text, encoding="utf-8")
            if rc == 1:
                rows.append((m.id, _failing_test(out), f"killed ({secs:.0f} s)"))
            elif rc == 0:
                rows.append((m.id, ", ".join(m.tests), f"SURVIVED ({secs:.0f} s)"))
            else:
                tail = " / ".join(out.strip().splitlines()[-3:])
                rows.append((m.id, ", ".join(m.tests), f"ERROR: pytest exit {rc}: {tail[:300]}"))
            print(f"  {rows[-1][2]}", flush=True)

        w0 = max(len("mutant"), *(len(r[0]) for r in rows))
        w1 = max(len("killed by"), *(len(r[1]) for r in rows))
        print()
        print(f"{'mutant':<{w0}} | {'killed by':<{w1}} | result")
        print(f"{'-' * w0}-|-{'-' * w1}-|-{'-' * 8}")
        for r in rows:
            print(f"{r[0]:<{w0}} | {r[1]:<{w1}} | {r[2]}")
        bad = [r for r in rows if not r[2].startswith("killed")]
        print(f"\n{len(rows) - len(bad)} of {len(rows)} mutants killed"
              f" ({'rev ' + args.rev if args.rev else 'working tree'} of {REPO})")
        return 1 if bad else 0
    finally:
        if args.keep:
            print(f"copy kept at {root}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
