"""An independent PyTorch / NumPy reference of EchoPrime's released inference math, written from
its description (`../shared/reference/echoprime.md` and issue 22), reading the release files
directly (tests only: it trusts the pickles it wrote itself). It shares no code with
`echoprime_jax.release`.

  encode   clips normalised with EchoPrime's pixel statistics, frames past the end zero ->
           mvit_v2_s -> (N, 512); the view classifier on frame 0 -> argmax
  sections per MIL-table section: sum over videos of table[s, view] * embedding, L2-normalised
  report   per section, candidates by descending dot product; the first whose decoded report
           quotes the section gives "Section: text [SEP]"; the quotes concatenated
  metrics  top-50 candidates per section; each phenotype the NaN-mean of the neighbours' labels
           that exist, read from the row of its own section (by name) or, as released, from the
           row at its section's position in section_to_phenotypes
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import re

import numpy as np
import torch

MEAN = torch.tensor([29.110628, 28.076836, 29.096405])
STD = torch.tensor([47.989223, 46.456997, 47.20083])


def decode(triples, book: dict[str, dict[str, list[str]]]) -> str:
  """A phrase-coded report -> its text: "[SEP] " before each new section but the first, then
  "Section: ", each phrase followed by a space, "[SEP]" at the end. A template's <numerical>
  slots (else its <string> slots) take str(value)."""
  names = list(book)
  text, current = "", None
  for s, p, value in triples:
    if s != current:
      text += ("[SEP] " if current is not None else "") + names[s] + ": "
      current = s
    phrase = [t for group in book[names[s]].values() for t in group][p]
    if "<numerical>" in phrase:
      phrase = phrase.replace("<numerical>", str(value))
    elif "<string>" in phrase:
      phrase = phrase.replace("<string>", str(value))
    text += phrase + " "
  return text + "[SEP]"


def extract_section(report: str, section: str) -> str:
  """The section's quote: its header and text up to the next [SEP], with the [SEP]; "" when
  the report has none (the header searched as a pattern, case-sensitive)."""
  found = re.search(section + r"(.*?)(?=\[SEP\])", report)
  return section + found.group(1) + "[SEP]" if found else ""


class EchoPrimeReference:

  def __init__(self, release: str, video: torch.nn.Module, views: torch.nn.Module):
    self.video, self.views = video.eval(), views.eval()
    data, assets = os.path.join(release, "candidates_data"), os.path.join(release, "assets")
    self.candidates = torch.cat([
        torch.load(os.path.join(data, f"candidate_embeddings_p{i}.pt"), weights_only=True)
        for i in (1, 2)]).double()
    with open(os.path.join(data, "candidate_studies.csv"), newline="") as f:
      self.studies = [r["Study"] for r in csv.DictReader(f)]
    with open(os.path.join(assets, "all_phr.json")) as f:
      book = json.load(f)
    with open(os.path.join(data, "candidate_reports.pkl"), "rb") as f:
      self.reports = [decode(r, book) for r in pickle.load(f)]
    with open(os.path.join(data, "candidate_labels.pkl"), "rb") as f:
      self.labels = pickle.load(f)
    with open(os.path.join(assets, "section_to_phenotypes.pkl"), "rb") as f:
      self.section_phenotypes = pickle.load(f)
    with open(os.path.join(assets, "MIL_weights.csv"), newline="") as f:
      rows = list(csv.reader(f))
    self.view_names = rows[0][1:]
    self.sections = [r[0] for r in rows[1:]]
    self.table = torch.tensor([[float(x) for x in r[1:]] for r in rows[1:]], dtype=torch.float64)

  @torch.no_grad()
  def encode(self, clips: np.ndarray, masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """clips (N, T, H, W, 3) uint8, masks (N, T) -> (embeddings (N, 512), views (N,))."""
    x = (torch.from_numpy(clips).float() - MEAN) / STD
    x = x * torch.from_numpy(masks).float()[:, :, None, None, None]
    x = x.permute(0, 4, 1, 2, 3).contiguous()  # (N, 3, T, H, W)
    embeddings = self.video(x)
    views = self.views(x[:, :, 0]).argmax(1)
    return embeddings, views

  def section_embeddings(self, embeddings: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    out = []
    for s in range(len(self.sections)):
      w = self.table[s, views]
      e = (embeddings.double() * w[:, None]).sum(0)
      out.append(e / e.norm())
    return torch.stack(out)

  def generate_report(self, sections: torch.Tensor) -> tuple[str, dict[str, int]]:
    report, chosen = "", {}
    similarities = sections @ self.candidates.T
    for s, name in enumerate(self.sections):
      for c in torch.argsort(similarities[s], descending=True).tolist():
        quote = extract_section(self.reports[c], name)
        if quote:
          report += quote
          chosen[name] = c
          break
    return report, chosen

  def predict_metrics(self, sections: torch.Tensor, k: int = 50, by_name: bool = True
                      ) -> tuple[dict[str, float], torch.Tensor]:
    similarities = sections @ self.candidates.T
    top = torch.topk(similarities, k=k, dim=1).indices
    preds = {}
    for position, (section, names) in enumerate(self.section_phenotypes.items()):
      row = self.sections.index(section) if by_name else position
      for name in names:
        values = [self.labels[name][self.studies[c]] for c in top[row].tolist()
                  if self.studies[c] in self.labels[name]]
        preds[name] = float(np.nanmean(values)) if values else float("nan")
    return preds, similarities
