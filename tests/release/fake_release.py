"""A fake EchoPrime release in the published formats (tests only: nothing of EchoPrime's is
copied or redistributed): random towers of the real architectures (torchvision mvit_v2_s with the
768 -> 512 head; a torchvision ConvNeXt with 11 outputs; a BERT masked-LM backbone with its 512-d
projection, smaller than BiomedBERT), a few thousand synthetic phrase-coded candidates with
labels, a phrase dictionary, the MIL table and the phenotype files."""

from __future__ import annotations

import csv
import json
import os
import pickle

import numpy as np
import torch

from tests import torch_reference as tr

SECTIONS = ("Left Ventricle", "Resting Segmental Wall Motion Analysis", "Right Ventricle",
            "Left Atrium", "Right Atrium", "Atrial Septum", "Mitral Valve", "Aortic Valve",
            "Tricuspid Valve", "Pulmonic Valve", "Pericardium", "Aorta", "IVC",
            "Pulmonary Artery", "Pulmonary Veins", "Postoperative Findings")
VIEWS = ("A2C", "A3C", "A4C", "A5C", "Apical_Doppler", "Doppler_Parasternal_Long",
         "Doppler_Parasternal_Short", "Parasternal_Long", "Parasternal_Short", "SSN", "Subcostal")
# The released section -> phenotypes map (its published shape: 11 sections, 21 phenotypes).
SECTION_PHENOTYPES = {
    "Left Ventricle": ["impella", "ejection_fraction"],
    "Right Ventricle": ["pacemaker", "rv_systolic_function_depressed",
                        "right_ventricle_dilation"],
    "Left Atrium": ["left_atrium_dilation"], "Right Atrium": ["right_atrium_dilation"],
    "Mitral Valve": ["mitraclip", "mitral_annular_calcification", "mitral_stenosis",
                     "mitral_regurgitation"],
    "Aortic Valve": ["tavr", "bicuspid_aov_morphology", "aortic_stenosis",
                     "aortic_regurgitation"],
    "Tricuspid Valve": ["tricuspid_stenosis", "tricuspid_valve_regurgitation"],
    "Pericardium": ["pericardial_effusion"], "Aorta": ["aortic_root_dilation"],
    "IVC": ["dilated_ivc"], "Pulmonary Artery": ["pulmonary_artery_pressure_continuous"]}
REGRESSION = ("ejection_fraction", "pulmonary_artery_pressure_continuous")
TEXT_CONFIG = dict(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=256, max_position_embeddings=64, layer_norm_eps=1e-12)


def phrase_book(rng: np.random.Generator) -> dict[str, dict[str, list[str]]]:
  """Per section, as released: sub-categories of templates (their lists concatenated give the
  phrase indexes; one sub-category named ""), some with <numerical> / <string> slots, one with
  two <numerical> slots, one with both kinds."""
  book = {}
  for s, name in enumerate(SECTIONS):
    word = name.lower()
    book[name] = {"": [f"the {word} is normal.", f"the {word} shows finding {s}."],
                  "Num": [f"{word} measures <numerical> cm.",
                          f"{word} gradient <numerical> to <numerical> mmHg.",
                          f"{word} <numerical> cm, <string> wall."],
                  "Str": [f"{word} described as <string>."],
                  "Grade": [f"moderate {word} disease.",
                            f"severe {word} disease {int(rng.integers(9))}."]}
  return book


def flat(book: dict[str, dict[str, list[str]]], name: str) -> list[str]:
  return [t for group in book[name].values() for t in group]


def coded_report(rng: np.random.Generator, book: dict) -> list[tuple]:
  """A phrase-coded report: most sections, 1-3 phrases each, slot values where needed."""
  triples = []
  for s, name in enumerate(SECTIONS):
    if rng.random() < 0.15:  # a section this report does not have
      continue
    templates = flat(book, name)
    for p in rng.choice(len(templates), size=int(rng.integers(1, 4)), replace=False):
      template = templates[p]
      if "<numerical>" in template:
        value = float(np.round(rng.uniform(0.5, 80), 1))
      elif "<string>" in template:
        value = str(rng.choice(["mild", "thickened", "calcified"]))
      else:
        value = ""
      triples.append((s, int(p), value))
  return triples


def write_release(root, *, candidates: int = 3000, seed: int = 0) -> dict:
  """Writes the release under `root` (weights/, candidates_data/, assets/) -> its torch towers
  and raw contents (for the reference)."""
  from echoprime_jax.models import mvit
  rng = np.random.default_rng(seed)
  for sub in ("weights", "candidates_data", "assets"):
    os.makedirs(os.path.join(root, sub), exist_ok=True)
  video = tr.torch_mvit(mvit.mvit_v2_s(), seed=seed)
  views = tr.torch_convnext((3, 3, 9, 3), (96, 192, 384, 768), num_classes=11, seed=seed)
  import transformers
  torch.manual_seed(seed)
  text = tr.EchoPrimeTextReference(transformers.BertConfig(**TEXT_CONFIG), out_dim=512).eval()
  torch.save(video.state_dict(), os.path.join(root, "weights", "echo_prime_encoder.pt"))
  torch.save(text.state_dict(), os.path.join(root, "weights", "echo_prime_text_encoder.pt"))
  torch.save(views.state_dict(), os.path.join(root, "weights", "view_classifier.pt"))

  book = phrase_book(rng)
  reports = [coded_report(rng, book) for _ in range(candidates)]
  studies = [f"S{100000 + 7 * i}" for i in range(candidates)]
  emb = rng.standard_normal((candidates, 512)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  cut = candidates * 3 // 5
  torch.save(torch.from_numpy(emb[:cut].copy()),
             os.path.join(root, "candidates_data", "candidate_embeddings_p1.pt"))
  torch.save(torch.from_numpy(emb[cut:].copy()),
             os.path.join(root, "candidates_data", "candidate_embeddings_p2.pt"))
  with open(os.path.join(root, "candidates_data", "candidate_studies.csv"), "w",
            newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["Study"])
    writer.writerows([s] for s in studies)
  labels = {}
  for names in SECTION_PHENOTYPES.values():
    for name in names:
      stated = rng.random(candidates) < 0.8  # a fifth of the studies have no value
      if name in REGRESSION:
        values = rng.uniform(10, 75, candidates).round(1)
      else:
        values = (rng.random(candidates) < rng.uniform(0.05, 0.5)).astype(int)
      labels[name] = {s: (float(v) if name in REGRESSION else int(v))
                      for s, v, keep in zip(studies, values, stated) if keep}
  with open(os.path.join(root, "candidates_data", "candidate_reports.pkl"), "wb") as f:
    pickle.dump(reports, f)
  with open(os.path.join(root, "candidates_data", "candidate_labels.pkl"), "wb") as f:
    pickle.dump(labels, f)
  with open(os.path.join(root, "assets", "section_to_phenotypes.pkl"), "wb") as f:
    pickle.dump(SECTION_PHENOTYPES, f)
  with open(os.path.join(root, "assets", "all_phr.json"), "w") as f:
    json.dump(book, f)
  per_section = {name: {"section": "FNDG_" + section.replace(" ", ""),
                        "mode": "regression" if name in REGRESSION else "binary",
                        "label_sources": [name.replace("_", " ") + (" <#>" if name in REGRESSION
                                                                    else "")],
                        **({"range": [0, 100]} if name in REGRESSION else {})}
                 for section, names in SECTION_PHENOTYPES.items() for name in names}
  per_section["atrial_septum_hypertrophy"] = {  # defined, in no section: not predicted
      "section": "FNDG_AtrialSeptum", "mode": "binary", "label_sources": ["lipomatous"]}
  with open(os.path.join(root, "assets", "per_section.json"), "w") as f:
    json.dump(per_section, f)
  thresholds = {name: float(np.round(rng.uniform(0.05, 0.6), 3)) for name in per_section
                if name not in REGRESSION}
  thresholds["atrial_septum_hypertrophy"] = 1.06  # as released: a row for no predicted phenotype
  with open(os.path.join(root, "assets", "roc_thresholds.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["", "feature", "threshold"])  # pandas' unnamed index column, as released
    writer.writerows([i, k, v] for i, (k, v) in enumerate(thresholds.items()))
  table = rng.uniform(0.05, 1.0, (15, len(VIEWS)))
  with open(os.path.join(root, "assets", "MIL_weights.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["Section", *VIEWS])
    for name, row in zip(SECTIONS[:15], table):
      writer.writerow([name, *row.tolist()])
  return {"video": video, "views": views, "text": text}
