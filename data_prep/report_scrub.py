"""Rule-based removal of protected health information (PHI) from free-text echo reports.

Reports are stored in training shards and in a candidate database shown to other patients'
clinicians, so they must carry no PHI. Nothing can be downloaded here (no NER model), so this is
a documented set of linear-time regular-expression rules, chosen to over-redact identifiers
rather than leak them while leaving the clinical vocabulary of echo reports alone.

`scrub(text)` -> `Scrubbed(text, counts)`. The text is NFKC-normalised first (full-width
digits and letters become ASCII, no-break spaces spaces, cm² cm2) and line endings become
"\\n"; the result is still free text that `reports.parse_sections` understands, with every
section header kept. `counts` maps each kind in `REDACTION_KINDS` to the number of removals (0
included).

Rules, in the order applied:

1. Header block. If the report has a known section header (`reports.SECTIONS`, any case),
   everything before the first header is dropped: letterhead, "Patient: ...", "DOB", "MRN" ...
   (also text before the header on the header's own line; text after a header is content).
   "header" counts the non-blank lines (or line prefixes) dropped.
2. Footer block. A line that starts (any case, after bullets) with a sign-off phrase
   (electronically signed, signed [by], reviewed by, dictated by, transcribed by, interpreting
   physician, reading physician, sonographer, attending, cc:, cc + a capitalised word (CC Jane
   Roe), copy to, report generated, printed on / by) drops itself and every line after it
   when it comes after the line of the last section header; elsewhere only that line is
   dropped (if it holds a section header, only the text before the header). "Page N of M"
   lines are dropped alone, never the text after them (page breaks fall inside sections).
   "footer" counts non-blank lines dropped.
   Reports without a section header keep all their text (it becomes "Other" downstream) but
   still lose sign-off lines.
3. Identifying fields, anywhere in the kept text: `Key: value` (also `Key = value`, and
   `Key - Value` before a capital or digit) where the key is patient [name / id], pt, name, DOB,
   date of birth, birth date, MRN, medical record [number], accession, acc#, account, SSN,
   social security, address, phone, telephone, tel, fax, email, referring / ordering
   [physician / MD], ref / attending MD, physician, tech[nologist / nician], nurse, reader,
   interpreter, fellow, resident, location, hospital, facility, institution, room, bed,
   insurance, encounter, visit, study / exam / service / admission / discharge date, date of
   study / exam / service / admission / discharge / visit. The key must start the line or
   follow punctuation (. ; , | : )) or a column gap (tab, 2+ spaces); the value runs to the next
   section header, a ";" or "|", a sentence end (". " + capital, not after an initial or an
   abbreviation such as Dr. / St.) or the end of the line, so identifying fields that follow
   each other go together. Each identifying key removed adds 1 to "header".
4. Inline replacements in the kept text (placeholders are never re-redacted):
   * [EMAIL] e-mail addresses; [URL] http(s)/ftp/www addresses and bare domains with a common
     lower-case top-level domain (.com .org .net .edu .gov .health .io .co.uk ...).
   * [ID] DICOM-style UIDs first (dotted digit strings of 4+ parts, or of 3 parts one of which
     has 6+ digits: 2.25.<uuid>), so no date or phone rule sees their pieces.
   * [DATE] 03/04/2024, 3/4/24, 03-04-2024, 03.04.2024 (day / month both <= 31, one <= 12),
     2024-03-04, 2024/03/04, 20240304 (an 8-digit token that is a real date 1900-2099), March 4,
     2024, Mar. 4th 2024, 4 March 2024, 4-Mar-2024, 04-MAR-24, Mar 2024, March 2024, 03/2024,
     and month-day without a year (March 4, 4 March; month capitalised there, so "may 5" is
     left). Not dates: a two-part m/d without a year (120/80, 1/2, 2/4, 3/6 murmur, grade 2/4),
     E/A 1.2, a year alone (HIPAA allows years).
   * [TIME] 10:32, 9:05, 10:32:05, 10:32 AM, 2 pm, 2 p.m., 1030am, 10.30 am, 1405 hrs, 1405h,
     14.05 hrs, the time of 2024-03-04T10:32:05 ([DATE]T[TIME]). Not ratios 1:1, 2:1 AV block,
     Qp:Qs 1.5 (minutes need two digits, hours <= 23), H:MM after "ratio" / "Qp:Qs" (ratio
     1:10) or before a duration unit (9:30 min, sec, s), nor a bare decimal 10.30.
   * [PHONE] (555) 123-4567, 555-123-4567, 555.123.4567, 555 123 4567, +1 555 123 4567,
     +44 20 7946 0958 (8-15 digits), bare 867-5309, with x / ext. / extension numbers; 555 1234
     and 555.1234 unless a unit follows (ms, mmHg ...) or a number, an acronym (VTI) or a
     measurement word (mass, gradient ...) comes before.
   * [ID] the number after an id key word without a colon: MRN 001 234 567, MRN # 12345,
     SSN 123 45 6789, Acc 12 345 678 (mrn, ssn, acc[ession], account, fin, csn, [medical]
     record, patient / pt id; 4+ digits, no unit after: "Acc 120 ms" stays).
   * [ID] digit groups joined by "-" with 6+ digits in 3+ groups (SSN 123-45-6789); any token
     with 6+ digits (00123456, 4455667788); tokens mixing letters and 4+ digits (A99887766,
     MRN12345678, ACC000123, Acc#12345) unless they read as a number with a unit (1000mL,
     7300TFX). Measurements stay: 4.5 cm, 55%, 1.2, 120/80, V 2.5 m/s, 3.2 cm2, Qp:Qs 1.5.
   * [AGE] ages over 89 (HIPAA safe harbour): 92-year-old, 92 year old, 95 yo, 95 y/o,
     95 y.o., 95 years of age, 95 years, 102y, 102 y, age 95, aged 95, Age: 95, and spelled out
     (ninety-one year old ... one hundred and two years of age). Ages <= 89 stay.
   * [NAME], each replacing one person's name and keeping the words around it:
     - DICOM person names LAST^FIRST[^MIDDLE...];
     - all-caps LAST, FIRST [MIDDLE] (DOE, JOHN A), unless a word of it or the word after it is
       echo vocabulary (MILD, MR, LVH, DIASTOLIC DYSFUNCTION ...), the word before is all caps
       (an all-caps sentence such as NORMAL LV SIZE, MILD MR) or it is the first thing after a
       section header;
     - after a title: Dr / Dr. / DR / Doctor / Mr. / Mrs. / Ms. / Mx. / Miss / Prof. /
       Professor + 1-3 capitalised words or initials (O'Brien, Smith-Jones, J., McDonald,
       SMITH); after Nurse / Sister / lower-case dr. the same unless the words are clinical
       vocabulary (dr. Doppler stays; Nurse Practitioner [NAME]);
     - before a credential: [Last,] up to 3 capitalised words + [,] MD / M.D. / DO / RN /
       RDCS / RDMS / RVT / RCS / PhD / NP / PA-C / FACC / FASE (Smith, John MD; Doe, Jane, MD);
     - after discussed with, d/w, called to, communicated to, spoke / spoken / talked /
       speaking with / to, notified, informed, consulted, paged, per, seen by, signed by,
       reviewed by, read by, performed by, interpreted by, dictated by, transcribed by,
       referred by, requested by, ordered by, sonographer, attending, interpreting / reading
       physician [+ ":" / "=" / "-"], then optionally a lower-case role or relative (d/w
       cardiologist, the patient's daughter, covering physician ...): 1-5 capitalised words.
     Name words may be any Latin, Greek or Cyrillic capital (Łukasz Żółć) and hold lower-case
     particles (van der Berg, de la Cruz, al-Hassan).
     No name rule fires without a title, credential, trigger, comma or caret, so eponyms and
     capitalised clinical words on their own (Doppler, Simpson's biplane, Bernoulli, Chiari
     network, Lambl's, Ebstein, Eustachian, Valsalva, Teichholz, Carpentier, Starr-Edwards,
     St. Jude, Mitral, Left Ventricle ...) are never touched. After a credential or trigger,
     clinical words, roles and eponyms that are no one's surname (those above, section words,
     Cardiology, Team, ASE, MR ...) are never names and end a run of name words; eponyms that
     are also surnames (Simpson, Ross, Fontan ...) are names except after "per" or as a
     possessive (per Simpson's, by Simpson's method); "per" + an all-caps word (per ASE) is a
     reference. A name run never swallows a section header.
   Replacements keep the surrounding whitespace; removed fields leave single spaces.
5. The inline rules run to a fixed point, so `scrub(scrub(t).text)` changes and counts nothing.
   `scrub` never raises on a str, is deterministic, and is linear in the text length.

NOT removed (known limitations; reviewers of a new corpus should check these):
* names without a title, credential, trigger phrase, all-caps "LAST, FIRST" or DICOM form
  ("John Smith reports ...", "Doe, John" in mixed case without a credential, a trigger with a
  lower-case word other than a listed role before the name ("d/w cardiology fellow Ann Lee"),
  lower-case names, "MR. SMITH": MR is read as mitral regurgitation), all-caps LAST, FIRST
  inside an all-caps sentence or right after a section header, nicknames and initials alone;
* institution, ward or city names and street addresses in the kept text unless under an
  identifying key ("... at Mercy Hospital"); in a report without section headers the
  letterhead stays too ("ACME HEART CENTER"), only its keyed fields and numbers go;
* continuation lines of a multi-line field ("Address: 1 Main St" + "Springfield" below);
* a month/day without a year in digits (3/4: read as a fraction or ratio), month names in
  lower case without a year ("may 5"), dates as a year alone, weekdays, relative dates;
* ZIP codes and other numbers with fewer than 6 digits and no letters (5-digit ids) unless
  after an id key word, ids written like decimals (1234.5678), 7-digit phones after a number,
  acronym or measurement word, or before a unit-like word ("555 1234 ms").
Over-redaction (clinical text that is lost): the rest of a sentence after an identifying key
(also "Physician: ...", "Reader - ..." and "Interpreter: Spanish"); ratios with a two-digit
second term not introduced by "ratio" / "Qp:Qs" ("1:10 dilution" reads as a time); "10.30 h" as
a duration; device model codes mixing letters and 4+ digits (19AGN-751); capitalised words
after a trigger or before a credential that the vocabulary lists miss ("discussed with
Vascular Surgery"); after an id key word a spaced number of 4+ digits ("MRN 1234").

Kept in one file (~730 lines, most of them the rule tables and why each rule exists): the
rules run in order and each is written against what the earlier ones leave, so they are read
together.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import unicodedata
from typing import Callable

from data_prep import reports

REDACTION_KINDS = ("header", "footer", "name", "date", "time", "phone", "id", "email", "url",
                   "age")
_MAX_PASSES = 4  # inline fixed point; one pass almost always suffices, the 2nd confirms


@dataclasses.dataclass(frozen=True)
class Scrubbed:
  text: str  # the report with PHI removed; still free text reports.parse_sections understands
  counts: dict[str, int]  # every kind in REDACTION_KINDS -> how many removals (0 included)


def scrub(text: str) -> Scrubbed:
  """Report text -> the same report without PHI, and what was removed (module docstring)."""
  counts = dict.fromkeys(REDACTION_KINDS, 0)
  # NFKC first: full-width digits / letters and no-break spaces then match the ASCII rules
  text = unicodedata.normalize("NFKC", text)
  text = text.replace("\r\n", "\n").replace("\r", "\n")
  text = _structure(text, counts)
  for _ in range(_MAX_PASSES):
    before = text
    text = _redact(text, counts)
    if text == before:
      break
  return Scrubbed(text, counts)


# ------------------------------------------------------------------------------ structure

def _char_class(ranges: tuple[tuple[int, int], ...]) -> str:
  """Capital letters of the given code point ranges, for use inside [...]."""
  return "".join(chr(i) for lo, hi in ranges for i in range(lo, hi + 1) if chr(i).isupper())


# Capitals: ASCII, Latin-1, Latin Extended-A/B (Łukasz, Żółć), Greek and Cyrillic.
_UP = "A-Z" + _char_class(((0xC0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF)))
_HEADER = reports._HEADER  # the parser's own header rule, so both agree on what a section is
_BULLET = r"[ \t]*(?:[-*=_>#~.•]+[ \t]*)?"
_SIGN_OFF = re.compile(
    _BULLET + r"(?:(?:electronically[ \t]+signed|signed|reviewed[ \t]+by|dictated[ \t]+by|"
    r"transcribed[ \t]+by|interpreting[ \t]+physician|reading[ \t]+physician|sonographer|"
    r"attending|copy[ \t]+to|report[ \t]+generated|printed[ \t]+(?:on|by))(?![^\W\d_])"
    r"|cc[ \t]*:|cc[ \t]+(?-i:[" + _UP + r"]))", re.IGNORECASE)  # CC Jane Roe: no colon
_PAGE = re.compile(_BULLET + r"page[ \t]+\d+[ \t]*(?:of|/)[ \t]*\d+(?!\d)", re.IGNORECASE)

_ID_KEYS = (
    r"patient(?:['’]s)?", r"pt", r"name", r"d\.?o\.?b\.?", r"date[ \t]+of[ \t]+birth",
    r"birth[ \t]*date", r"mrn", r"medical[ \t]+record", r"accession", r"acc\.?", r"account",
    r"ssn", r"social[ \t]+security", r"(?:home[ \t]+)?address", r"(?:tele)?phone", r"tel\.?",
    r"fax", r"e-?mail", r"referring", r"ordering",
    r"(?:ref\.?|attending)[ \t]*(?:md|physician|doctor|dr)\.?", r"physician",
    r"tech(?:nologist|nician)?", r"nurse", r"reader", r"interpreter", r"fellow", r"resident",
    r"location", r"hospital", r"facility", r"institution", r"room", r"bed", r"insurance",
    r"encounter", r"visit", r"(?:study|exam|service|admission|discharge)[ \t]+date",
    r"date[ \t]+of[ \t]+(?:study|exam|service|admission|discharge|visit)",
)
_KEY_SUFFIX = (r"(?:[ \t]*(?:name|id|number|num|no\.?|#|physician|provider|doctor|clinician|"
               r"md)(?![^\W\d_])){0,2}")
# Separator ":", "=" or a spaced dash before a capital or digit (Name - John Smith, Room - 12;
# not pt-specific, Location - basal).
_KEY = re.compile(r"(?<![\w#])(?:" + "|".join(_ID_KEYS) + r")(?![^\W\d_])" + _KEY_SUFFIX
                  + r"(?:[ \t]*[:=]|(?:[ \t]+-|[ \t]*-[ \t])[ \t]*(?=(?-i:[\d" + _UP + r"])))",
                  re.IGNORECASE)
_FIELD_STOP = re.compile(r"[;|]|\.(?=[ \t]+[A-Z(\[])")
_LAST_WORD = re.compile(r"([^\W_]+)$")
_ABBREVIATIONS = frozenset(
    "st dr mr mrs ms jr sr prof no apt ave rd blvd ste inc co corp mt ft dept univ hosp med "
    "ctr bldg fl".split())


def _structure(text: str, counts: dict[str, int]) -> str:
  """Drops the header block, sign-off lines / footer block and identifying fields."""
  lines = text.split("\n")
  headers = [_HEADER.search(line) for line in lines]
  at = [i for i, m in enumerate(headers) if m]
  first, last = (at[0], at[-1]) if at else (0, None)
  if at:
    counts["header"] += sum(1 for line in lines[:first] if line.strip())
    start = headers[first].start()
    if lines[first][:start].strip():
      counts["header"] += 1
    lines[first] = lines[first][start:]
  out: list[str] = []
  truncated = False
  for i in range(first, len(lines)):
    # fields first: what is left of a line may start with a sign-off ("MRN: 1 | Signed ...")
    line, n = _drop_fields(lines[i])
    counts["header"] += n
    if n and not line.strip():
      continue
    if _PAGE.match(line):
      counts["footer"] += 1
      continue
    if _SIGN_OFF.match(line):
      if last is not None and i > last:
        counts["footer"] += sum(1 for rest in lines[i:] if rest.strip())
        truncated = True
        break
      counts["footer"] += 1
      m = _HEADER.search(line)
      if m is None:
        continue
      line = line[m.start():]
    out.append(line)
  if truncated:
    while out and not out[-1].strip():
      out.pop()
  return "\n".join(out)


def _field_start(line: str, i: int) -> bool:
  """A key starts a field at the line start, after punctuation or after a column gap."""
  k = i
  while k > 0 and line[k - 1] in " \t":
    k -= 1
  if k == 0 or i - k >= 2 or "\t" in line[k:i]:
    return True
  return line[k - 1] in ".;,|:)"


def _field_end(line: str, start: int, header: int) -> int:
  """Where a field's value ends: the next section header (at `header`), ; or |, a sentence
  end, the line end."""
  for m in _FIELD_STOP.finditer(line, start, header):
    if m.group() != ".":
      return m.start()
    word = _LAST_WORD.search(line[max(start, m.start() - 40):m.start()])
    if word and ((len(word.group(1)) == 1 and word.group(1).isalpha())
                 or word.group(1).lower() in _ABBREVIATIONS):
      continue  # an initial (John A. Roberts) or an abbreviation (Dr., St.)
    return m.end()
  return header


def _drop_fields(line: str) -> tuple[str, int]:
  """Line without its identifying `Key: value` fields, and how many keys were removed.
  Linear: header positions are found once and the kept pieces joined once."""
  headers = [m.start() for m in _HEADER.finditer(line)] + [len(line)]
  kept: list[str] = []
  n = cursor = h = 0
  for key in _KEY.finditer(line):
    if key.start() < cursor or not _field_start(line, key.start()):
      continue
    while headers[h] < key.end():
      h += 1
    end = _field_end(line, key.end(), headers[h])
    n += max(1, len(_KEY.findall(line, key.start(), end)))
    kept.append(line[cursor:key.start()])
    cursor = end
  if not n:
    return line, 0
  kept.append(line[cursor:])
  # tidy the seams: no separator or run of spaces left where a field was
  last = len(kept) - 1
  parts = [p.lstrip(" \t;|") if i else p for i, p in enumerate(kept)]
  parts = [p.rstrip(" \t,;|") if i < last else p for i, p in enumerate(parts)]
  return " ".join(p for p in parts if p.strip()), n


# ------------------------------------------------------------------------------ inline rules

_LETTER = r"[^\W\d_]"
# One name word: O'Brien, Smith-Jones, McDonald, SMITH, an initial (J. / J).
_NW = (rf"(?:[{_UP}]['’][{_UP}]{_LETTER}+|[{_UP}]{_LETTER}+(?:-[{_UP}]{_LETTER}+)?"
       rf"|[{_UP}]\.?)(?!\w)")
_SECTION_ALT = "|".join(re.escape(s) for s in sorted(reports.SECTIONS, key=len, reverse=True))
_NOT_HEADER = rf"(?!(?i:{_SECTION_ALT})[ \t]*:)"
_G = _NOT_HEADER  # guard before every name word: a name never swallows a section header


# Lower-case particles inside a name (van der Berg, de la Cruz, al-Hassan): never clinical words.
_PARTICLES = frozenset("van von der den de del della da di du le la bin ibn al el ter ten dos "
                       "das".split())
_PW = (r"(?:(?:" + "|".join(sorted(_PARTICLES)) + r")[ \t]+|(?:al|el)-){0,2}" + _G + _NW)


def _words(n: int) -> str:
  return rf"{_PW}(?:[ \t]+{_PW}){{0,{n - 1}}}"


_TITLES = frozenset("dr doctor mr mrs ms mx miss prof professor nurse sister".split())
# Titles that are also ordinary words (Nurse, Sister, lower-case dr): only before a word that is
# no clinical vocabulary.
_WEAK_TITLES = frozenset("nurse sister dr".split())
# Eponyms that are also surnames: only "per <eponym>" and "<Eponym>'s" (Simpson's biplane) are
# read as the technique; anywhere else the word may be a person's name.
_EPONYMS = frozenset((
    "simpson edwards starr jude hancock ross glenn fontan bentall rastelli mustard senning "
    "blalock taussig fallot barlow wilkins duke mcconnell austin flint graham steell carvallo "
    "holt oram noonan williams turner shone marfan kawasaki libman sacks loeffler gerbode "
    "friedreich fabry pompe danon hurler mosaic magna"
).split())
_CREDENTIALS = frozenset("md m.d do d.o rn rdcs rdms rvt rcs phd ph.d np pa-c facc fase".split())
_NOT_NAMES = frozenset((
    # titles, credentials, roles, departments, function words
    "dr doctor mr mrs ms mx miss prof professor md do rn rdcs rdms rvt rcs phd np pa-c facc fase "
    "the a an and or of to in on at by with for from this that these those no not none all "
    "patient pt team service department dept clinic cardiology radiology surgery nursing icu "
    "ccu ed er lab laboratory fellow resident nurse sonographer technician technologist tech "
    "physician cardiologist attending staff echo echocardiography echocardiogram study report "
    "protocol guideline guidelines criteria method methods equation formula rule rules "
    "recommendation recommendations standard standards today prior results result critical "
    "impression conclusion conclusions summary comments comment comparison findings finding "
    "ase aha acc esc eacvi asecho nyha tte tee "
    # eponyms and device names that are no one's surname
    "doppler bernoulli chiari lambl lambls ebstein eustachian valsalva teichholz carpentier "
    "starr-edwards carpentier-edwards st medtronic sapien perimount watchman amplatzer "
    "mitraclip takotsubo eisenmenger lutembacher kussmaul coanda torricelli gorlin hakki "
    # clinical words and abbreviations
    "normal abnormal mild mildly moderate moderately severe severely trace trivial small "
    "large lv rv la ra mr tr ar pr as ms ps ts ai mi ti pi lvef ef ivc pa pfo asd vsd tapse "
    "rvsp pasp lvot rvot av mv tv pv sam dcm hcm ecg ekg bp hr bsa color colour size function "
    "thickness dilated enlarged reduced preserved hypertrophy regurgitation stenosis effusion "
    "thickened calcified sclerotic sclerosis sinus rhythm mm cm ml yes present absent see "
    "also note notes history indication indications inferior anterior lateral septal "
    "posterior apical basal mid global regional hypokinesis akinesis dyskinesis hypokinetic "
    "akinetic dyskinetic wall motion segment segments valve valves grade stage ii iii iv "
    "lvh rvh diastolic systolic dysfunction mac af afib chf cad hfref hfpef tavr tavi savr mvr "
    "avr cabg pci pacemaker icd lead mass thrombus vegetation prolapse flail shunt gradient "
    "heart failure cardiac emergency primary care surgical structural imaging interventional "
    "electrophysiology ep hospitalist medicine oncology anesthesia anaesthesia covering on-call "
    "family son daughter wife husband mother father sister brother partner spouse friend "
    "caregiver guardian proxy relative niece nephew surgeon consent practitioner provider"
).split()) | frozenset(w.lower() for s in reports.SECTIONS for w in s.split())

_EMAIL = re.compile(r"(?<![\w.+%-])[\w.+%-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_URL = re.compile(r"(?<![\w/@.-])(?:(?:https?|ftp)://|www\.)[^\s<>\"'\[\]]+", re.IGNORECASE)
_DOMAIN = re.compile(
    r"(?<![\w/@.-])[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?:com|org|net|edu|gov|mil|health|io|"
    r"co\.uk|org\.uk|nhs\.uk)(?![\w-]|\.\w)(?:/[^\s<>\"'\[\]]*)?")
_UID = re.compile(r"(?<![\w.])(?:\d+(?:\.\d+){3,}|\d+\.\d+\.\d{6,}|\d+\.\d{6,}\.\d+)(?!\w|\.\d)")

_MONTHS = (r"jan(?:uary|\.)?", r"feb(?:ruary|\.)?", r"mar(?:ch|\.)?", r"apr(?:il|\.)?", r"may",
           r"jun(?:e|\.)?", r"jul(?:y|\.)?", r"aug(?:ust|\.)?", r"sep(?:tember|t\.?|\.)?",
           r"oct(?:ober|\.)?", r"nov(?:ember|\.)?", r"dec(?:ember|\.)?")  # "." only abbreviates
_MONTH_I = r"(?i:" + "|".join(_MONTHS) + r")(?![^\W\d_])"  # with a year: any case
_MONTH_C = ("(?:" + "|".join(m[0].upper() + "(?i:" + m[1:] + ")" for m in _MONTHS)
            + r")(?![^\W\d_])")  # without a year: capitalised, so "may 5" is no date
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?(?![\d]|[^\W\d_])"
_Y4 = r"(?:19|20)\d\d(?!\d)"
_DATE_WORDS = re.compile(
    r"(?<![\w.:/-])(?:" + _DAY + r"(?:[ \t]+|-)" + _MONTH_I + r"(?:,?[ \t]+|-)" + _Y4
    + r"|" + _DAY + r"-" + _MONTH_I + r"-\d\d(?!\d)"
    + r"|" + _DAY + r"[ \t]+" + _MONTH_C + r")"
    + r"|(?<![^\W\d_])(?:" + _MONTH_I + r"[ \t]+" + _DAY + r"(?:,[ \t]*|[ \t]+)" + _Y4
    + r"|" + _MONTH_I + r",?[ \t]+" + _Y4
    + r"|" + _MONTH_C + r"[ \t]+" + _DAY + r"(?![.:/]\d))")
_DATE_ISO = re.compile(r"(?<![\w.:/-])(?:19|20)\d\d(?P<s>[-/.])(?:0?[1-9]|1[0-2])(?P=s)"
                       r"(?:[12]\d|3[01]|0?[1-9])(?!\d)")
_DATE_NUM = re.compile(r"(?<![\w.:/-])(?P<a>\d{1,2})(?P<s>[-/.])(?P<b>\d{1,2})(?P=s)"
                       r"(?P<y>\d{4}|\d\d)(?!\w|[-/.:]\d)")
_DATE_8 = re.compile(r"(?<![\w.])(?P<y>(?:19|20)\d\d)(?P<m>\d\d)(?P<d>\d\d)(?!\w|\.\d)")
_DATE_MY = re.compile(r"(?<![\w.:/-])(?:0?[1-9]|1[0-2])/(?:19|20)\d\d(?![\w/]|[.-]\d)")

_AMPM = r"(?:[AaPp]\.[Mm]\.?|[AaPp][Mm])(?![^\W\d_])"
# (?<=[DATE]T): the time of an ISO date-time (2024-03-04T10:32:05) once its date is gone
_TIME_COLON = re.compile(r"(?:(?<![\w.:/])|(?<=\[DATE\]T))(?:[01]?\d|2[0-3]):[0-5]\d"
                         r"(?::[0-5]\d(?:\.\d{1,6}(?!\d))?)?(?![\d:])"
                         r"(?:[ \t]*" + _AMPM + r")?")
_DURATION = re.compile(r"[ \t]*(?:min|mins|minutes?|sec|secs|seconds?|s)(?![^\W\d_])",
                       re.IGNORECASE)
_RATIO_BEFORE = re.compile(r"(?:ratio|qp[:/]?qs)[ \t]*(?:of|is|was|=|:)?[ \t]*$", re.IGNORECASE)
# 2 pm, 1030am, 10.30 am, 14.05 hrs (a dotted time only with am / pm / h after it: 10.30 is a
# decimal)
_TIME_AMPM = re.compile(r"(?<![\w.:/])(?:1[0-2]|0?[1-9])(?:\.?[0-5]\d)?[ \t]*" + _AMPM)
_TIME_DOT = re.compile(r"(?<![\w.:/])(?:[01]?\d|2[0-3])\.[0-5]\d[ \t]*(?:hrs?|hours|h)"
                       r"(?![^\W\d_])", re.IGNORECASE)
_TIME_HRS = re.compile(r"(?<![\w.:/])(?:[01]\d|2[0-3])[0-5]\d[ \t]*(?:hrs?|hours|h)"
                       r"(?![^\W\d_])", re.IGNORECASE)

_EXT = r"(?:[ \t]*(?:x|ext\.?|extension)[ \t]*\d{1,6}(?!\d))?"
_PHONE_NA = re.compile(r"(?<![\w+.(/-])(?:\+?1[ \t.-]?)?(?:\(\d{3}\)[ \t.-]?|\d{3}[ \t.-])"
                       r"\d{3}[ \t.-]?\d{4}(?![\w-]|\.\d)" + _EXT, re.IGNORECASE)
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d[\d \t().-]{6,18}\d(?!\d)" + _EXT, re.IGNORECASE)
_PHONE_LOCAL = re.compile(r"(?<![\w.(/-])\d{3}-\d{4}(?![\w-]|[./]\d)" + _EXT, re.IGNORECASE)
# 555 1234, 555.1234: also how measurements can look, so the words around decide (_local_phone)
_PHONE_LOCAL_SPACED = re.compile(r"(?<![\w.,(/:-])\d{3}(?:[ \t]|\.)\d{4}(?![\w-]|[.,/:]\d)"
                                 + _EXT, re.IGNORECASE)
_PHONE_WORDS = frozenset("tel telephone phone ph fax pager cell mobile".split())
_MEASURE_WORDS = frozenset((
    "mass volume vol area index gradient gradients velocity velocities vel pressure pressures "
    "time times diameter diameters dimension length width height weight dose count counts rate "
    "rates value values size sizes range between from to and x by of measured "
    "peak mean max min vmax vti ef lvef").split())
_UNIT_AFTER = re.compile(
    r"[ \t]*(?:%|(?:mm|cm|m|ml|l|g|kg|mg|mcg|ms|msec|s|sec|mmhg|bpm|cc|hz|khz|mhz|min|units?|"
    r"beats|dynes?|w|j|frames?|fps)(?:[23²³]|/[a-z0-9²]{1,5})?(?![^\W\d_]))", re.IGNORECASE)
# An id key word and a spaced or "#" number after it without a colon: MRN 001 234 567,
# MRN # 12345, SSN 123 45 6789, Acc 12 345 678.
_KEYED_ID = re.compile(
    r"(?<![^\W\d_])(?P<key>(?i:mrn|ssn|acc|accession|account|acct|fin|csn|"
    r"(?:medical[ \t]+)?record|patient[ \t]+id|pt[ \t]+id)(?:[ \t]*(?:no\.?|number|num|#))?"
    r"[ \t]*#?[ \t]*)(?P<id>\d+(?:[ \t-]\d+){0,4})(?![\w-]|[.,/:]\d)")

_DASHED = re.compile(r"(?<![\w.-])\d+(?:-\d+){2,}(?![\w-]|\.\d)")
_TOKEN = re.compile(r"(?<![\w.\[-])[A-Za-z0-9]+(?:[-_#][A-Za-z0-9]+)*"
                    r"(?![\w\]-]|[#_][A-Za-z0-9]|\.\d)")
_NUMBER_UNIT = re.compile(r"\d+[A-Za-z]{1,5}")

_AGE = re.compile(
    r"(?<![\w.])(?P<n>\d{2,3})(?:[ \t]*(?:y/o|y\.o\.?|yoa|yo)(?![\w/])"
    r"|[ \t]*-?[ \t]*(?:years?|yrs?|y)(?:[ \t]*-?[ \t]*old|[ \t]+of[ \t]+age)?(?![\w/]|\.\w))"
    r"|(?<![^\W\d_])aged?[ \t]*:?[ \t]*(?P<m>\d{2,3})(?![\w.])", re.IGNORECASE)
_UNITS = r"(?:one|two|three|four|five|six|seven|eight|nine)"
# Spelled out, over 89 only: ninety-one year old ... one hundred and two years of age.
_AGE_WORDS = re.compile(
    r"(?<![^\W\d_])(?:ninety(?:[ \t-]+" + _UNITS + r")?|(?:one|a)[ \t-]+hundred(?:[ \t-]+"
    r"(?:and[ \t-]+)?[a-z]+(?:[ \t-]+" + _UNITS + r")?)?)(?:[ \t]*-?[ \t]*(?:years?|yrs?)"
    r"(?:[ \t]*-?[ \t]*old|[ \t]+of[ \t]+age))(?![^\W\d_])", re.IGNORECASE)

_DICOM = re.compile(rf"(?<![\w'’^\[\]-])[^\W\d_][\w'’-]*(?:\^[\w'’-]*)+"
                    rf"(?:[ \t][{_UP}][{_UP}'’-]+(?![\w^]))*(?![\w^])")
_CAPS = re.compile(rf"(?<![\w'’^\[-])(?P<last>[{_UP}][{_UP}'’-]{{1,30}}),[ \t]*"
                   rf"(?P<first>[{_UP}][{_UP}'’-]{{1,30}})"
                   rf"(?:[ \t]+(?P<middle>M\.D\.|D\.O\.|[{_UP}][{_UP}'’-]{{0,30}}\.?)(?!\w)"
                   rf"(?![ \t]*,[ \t]*[{_UP}][{_UP}'’-]))?"  # not the next LAST, of a list
                   rf"(?![\w'’-])")
_TITLE = re.compile(r"(?<![\w.])(?P<pre>(?P<title>Dr|DR|dr|Doctor|DOCTOR|Mrs|MRS|Mr|Ms|Mx|Miss|"
                    r"MISS|Prof|PROF|Professor|Nurse|NURSE|Sister|SISTER)(?![^\W\d_])\.?[ \t]*)"
                    r"(?P<name>" + _words(3) + ")")
# [Last,] First [Middle] + credential: Smith, John MD; Doe, Jane, MD.
_CREDENTIAL = re.compile(r"(?<![\w'’\[.-])(?P<name>(?:" + _PW + r",[ \t]*)?" + _words(3)
                         + r")(?P<post>(?:,[ \t]*|[ \t]+)"
                         r"(?:M\.D\.|MD|D\.O\.|DO|RN|RDCS|RDMS|RVT|RCS|Ph\.?D\.?|NP|PA-C|FACC|"
                         r"FASE)(?![\w-]))")
# A lower-case role or relative between a trigger and the name: d/w cardiologist John Smith,
# discussed with the patient's daughter Jane Roe.
_ROLE = (r"(?:(?i:the|a|an|his|her|their|our|(?:patient|pt)['’]?s)[ \t]+){0,2}"
         r"(?:(?i:primary|covering|on-call|referring|ordering|consulting|treating|interventional|"
         r"cardiac|cardiothoracic|vascular)[ \t]+)?"
         r"(?:(?i:cardiologists?|surgeons?|physicians?|doctors?|nurses?|daughters?|sons?|wife|"
         r"husband|mother|father|sisters?|brothers?|family|patient|pt|partner|spouse|friend|"
         r"caregiver|guardian|proxy|relative|niece|nephew|grand(?:daughter|son)|fellow|resident|"
         r"attending|sonographer|technologist|tech|provider|colleague|np|pa)(?![^\W\d_])[ \t]+)?")
_TRIGGER = re.compile(
    r"(?<![^\W\d_])(?P<pre>(?P<trig>(?i:discussed[ \t]+with|d/w|called[ \t]+to|"
    r"(?:spoke|spoken|talked|speaking)[ \t]+(?:with|to)|(?:referred|requested|ordered)[ \t]+by|"
    r"consulted|paged|informed|"
    r"communicated[ \t]+to|notified|per|seen[ \t]+by|signed[ \t]+by|reviewed[ \t]+by|"
    r"read[ \t]+by|performed[ \t]+by|interpreted[ \t]+by|dictated[ \t]+by|transcribed[ \t]+by|"
    r"sonographer|attending|interpreting[ \t]+physician|reading[ \t]+physician))"
    r"(?![^\W\d_])[ \t]*(?:[:=]|-(?!-))?[ \t]*" + _ROLE + r")(?P<name>" + _words(5) + ")")
_SPLIT_WORDS = re.compile(r"[ \t]+")
_PREV_TOKEN = re.compile(r"(\S+)[ \t]*$")
_NEXT_WORD = re.compile(r"[ \t]+([^\W\d_][\w'’-]*)")
_HEADER_AT_END = re.compile(_HEADER.pattern + r"[ \t]*$", re.IGNORECASE)
_TRIGGER_WORDS = frozenset("with w to notified per by sonographer attending physician".split())


def _redact(text: str, counts: dict[str, int]) -> str:
  steps: list[tuple[str, re.Pattern, Callable[[re.Match], str | None]]] = [
      ("email", _EMAIL, lambda m: "[EMAIL]"),
      ("url", _URL, _url),
      ("url", _DOMAIN, lambda m: "[URL]"),
      ("id", _UID, lambda m: "[ID]"),
      ("id", _KEYED_ID, _keyed_id),
      ("date", _DATE_WORDS, lambda m: "[DATE]"),
      ("date", _DATE_ISO, lambda m: "[DATE]"),
      ("date", _DATE_NUM, _numeric_date),
      ("date", _DATE_8, _eight_digit_date),
      ("date", _DATE_MY, lambda m: "[DATE]"),
      ("time", _TIME_COLON, _colon_time),
      ("time", _TIME_AMPM, lambda m: "[TIME]"),
      ("time", _TIME_HRS, lambda m: "[TIME]"),
      ("time", _TIME_DOT, lambda m: "[TIME]"),
      ("phone", _PHONE_NA, lambda m: "[PHONE]"),
      ("phone", _PHONE_INTL, _international_phone),
      ("phone", _PHONE_LOCAL, lambda m: "[PHONE]"),
      ("phone", _PHONE_LOCAL_SPACED, _local_phone),
      ("id", _DASHED, lambda m: "[ID]" if _digits(m.group()) >= 6 else None),
      ("id", _TOKEN, _id_token),
      ("age", _AGE, _age),
      ("age", _AGE_WORDS, lambda m: "[AGE]"),
      ("name", _DICOM, lambda m: "[NAME]"),
      ("name", _CAPS, _caps_names()),
      ("name", _TITLE, _titled_name),
      ("name", _CREDENTIAL, _credentialed_name),
      ("name", _TRIGGER, _triggered_name),
  ]
  for kind, pattern, repl in steps:
    text = _sub(pattern, repl, text, counts, kind)
  return text


def _sub(pattern: re.Pattern, repl: Callable[[re.Match], str | None], text: str,
         counts: dict[str, int], kind: str) -> str:
  def one(m: re.Match) -> str:
    out = repl(m)
    if out is None or out == m.group():
      return m.group()
    counts[kind] += 1
    return out
  return pattern.sub(one, text)


def _digits(s: str) -> int:
  return sum(c.isdigit() for c in s)


def _url(m: re.Match) -> str:
  url = m.group()
  core = url.rstrip(".,;:!?)")
  return "[URL]" + url[len(core):]


def _numeric_date(m: re.Match) -> str | None:
  a, b = int(m.group("a")), int(m.group("b"))
  if not (1 <= a <= 31 and 1 <= b <= 31 and min(a, b) <= 12):
    return None
  if m.group("s") == "." and len(m.group("y")) != 4:
    return None  # 1.2.24 is more likely a version or a list than a date
  return "[DATE]"


def _eight_digit_date(m: re.Match) -> str | None:
  try:
    datetime.date(int(m.group("y")), int(m.group("m")), int(m.group("d")))
  except ValueError:
    return None  # left to the id rule (6+ digits)
  return "[DATE]"


def _colon_time(m: re.Match) -> str | None:
  if _DURATION.match(m.string, m.end()):
    return None  # 9:30 min exercise: a duration
  if _RATIO_BEFORE.search(m.string, max(0, m.start() - 20), m.start()):
    return None  # ratio 1:10, Qp:Qs 1:1
  return "[TIME]"


def _international_phone(m: re.Match) -> str | None:
  return "[PHONE]" if 8 <= _digits(m.group()) <= 15 else None


def _local_phone(m: re.Match) -> str | None:
  """555 1234 is a phone unless a unit follows (555 1234 ms) or a measurement comes before: a
  number (120 555 1234), an acronym (VTI 222 1234) or a measurement word (mass 555 1234)."""
  s = m.string
  if _UNIT_AFTER.match(s, m.end()):
    return None
  prev = _PREV_TOKEN.search(s, max(0, m.start() - 40), m.start())
  if prev:
    word = prev.group(1).strip(":=,;()#.")
    if word.lower() in _PHONE_WORDS:
      return "[PHONE]"
    if _digits(word) or _is_acronym(word) or word.lower() in _MEASURE_WORDS:
      return None
  return "[PHONE]"


def _keyed_id(m: re.Match) -> str | None:
  if _digits(m.group("id")) < 4 or _UNIT_AFTER.match(m.string, m.end()):
    return None  # Acc 120 ms (acceleration), or too short to identify anyone
  return m.group("key") + "[ID]"


def _id_token(m: re.Match) -> str | None:
  token = m.group()
  digits = _digits(token)
  if digits >= 6:
    return "[ID]"
  letters = sum(c.isalpha() for c in token)
  if letters and digits >= 4 and not _NUMBER_UNIT.fullmatch(token):
    return "[ID]"
  return None


def _age(m: re.Match) -> str | None:
  return "[AGE]" if int(m.group("n") or m.group("m")) > 89 else None


def _norm(word: str) -> str:
  w = word.lower().rstrip(".,")
  for tail in ("'s", "’s"):
    w = w.removesuffix(tail)
  return w.replace("'", "").replace("’", "")


def _is_stop(word: str) -> bool:
  """Clinical vocabulary, titles, roles: never part of a name. Initials (J., A) are names."""
  w = _norm(word)
  if len(w) == 1 or word in _PARTICLES:
    return False
  return w in _NOT_NAMES or ("-" in w and all(p in _NOT_NAMES for p in w.split("-")))


def _is_acronym(word: str) -> bool:
  w = word.rstrip(".")
  return len(w) >= 2 and w.isalpha() and w.isupper()


def _replace_words(name: str, keep: Callable[[list[str]], tuple[int, int] | None]
                   ) -> str | None:
  """`name` with words [i, j) (as chosen by `keep`) replaced by one [NAME]."""
  words = _SPLIT_WORDS.split(name)
  seps = _SPLIT_WORDS.findall(name)
  span = keep(words)
  if span is None:
    return None
  i, j = span
  if not any(len(w.rstrip(".")) >= 2 for w in words[i:j]):
    return None  # initials alone (E/A, "with A") are too weak a signal
  out = ""
  for k, w in enumerate(words):
    if k == i:
      out += "[NAME]"
    elif not i < k < j:
      out += w
    if k < len(seps) and not i <= k < j - 1:
      out += seps[k]
  return out


def _titled_name(m: re.Match) -> str:
  """The word after a title is a name whatever it is (after Nurse, Sister, dr: unless it is
  clinical vocabulary); the run stops at clinical words."""
  name = m.group("name")
  words, seps = _SPLIT_WORDS.split(name), _SPLIT_WORDS.findall(name)
  title = m.group("title")
  i = 0
  if title.lower() in _WEAK_TITLES and title not in ("Dr", "DR"):
    while i < len(words) and _is_stop(words[i]):
      i += 1  # Nurse Practitioner Jo Li; dr. Doppler is no one
    if i == len(words):
      return m.group()
  j = i + 1
  while j < len(words) and not _is_stop(words[j]):
    j += 1
  return (m.group("pre") + "".join(words[k] + seps[k] for k in range(i)) + "[NAME]"
          + "".join(seps[k - 1] + words[k] for k in range(j, len(words))))


def _credentialed_name(m: re.Match) -> str | None:
  def keep(words: list[str]) -> tuple[int, int] | None:
    i = len(words)
    while i > 0 and not _is_stop(words[i - 1]):
      i -= 1
    return (i, len(words)) if i < len(words) else None
  out = _replace_words(m.group("name"), keep)
  return None if out is None else out + m.group("post")


def _triggered_name(m: re.Match) -> str | None:
  per = m.group("trig").lower() == "per"
  possessive = m.string.startswith(("'s", "’s"), m.end("name"))

  def keep(words: list[str]) -> tuple[int, int] | None:
    i = 0
    first = words[0]
    if per and (_is_stop(first) or _is_acronym(first) or _norm(first) in _EPONYMS):
      return None  # per ASE, per Simpson's, per Bernoulli: a reference, not a person
    if _norm(first) in _EPONYMS and len(words) == 1 and possessive:
      return None  # measured by Simpson's method
    while i < len(words) and _is_stop(words[i]):
      i += 1
    j = i
    while j < len(words) and not _is_stop(words[j]):
      j += 1
    return (i, j) if j > i else None
  out = _replace_words(m.group("name"), keep)
  return None if out is None else m.group("pre") + out


def _caps_names() -> Callable[[re.Match], str | None]:
  """LAST, FIRST in capitals, unless clinical words or part of an all-caps sentence. Stateful
  (one per text): a name right after an accepted one (DOE, JOHN SMITH, JANE) is judged as if
  the first were already [NAME], so one pass finds what a second would."""
  last_end = -1

  def repl(m: re.Match) -> str | None:
    nonlocal last_end
    if _is_stop(m.group("last")) or _is_stop(m.group("first")):
      return None
    middle = m.group("middle")
    keep = ""  # ROE, JANE MD: the credential is no middle name
    if middle and _norm(middle) in _CREDENTIALS:
      keep = m.string[m.end("first"):m.end()]
    elif middle and _is_stop(middle):
      return None
    s = m.string
    before = s[max(0, m.start() - 80):m.start()].rsplit("\n", 1)[-1]
    prev = _PREV_TOKEN.search(before)
    if prev and m.start() - len(before) + prev.start(1) >= last_end:
      token = prev.group(1)
      if _HEADER_AT_END.search(before):
        return None  # the first words of a finding (Mitral Valve: THICKENED, CALCIFIED)
      word = token.strip(".,;:()")
      if _is_acronym(word) and _norm(word) not in _TITLES | _TRIGGER_WORDS:
        return None  # inside an all-caps sentence (NORMAL LV SIZE, MILD MR)
    after = _NEXT_WORD.match(s, m.end(), m.end() + 40)
    if not keep and after and after.group(1).isupper() and _is_stop(after.group(1)):
      return None  # LVH, DIASTOLIC DYSFUNCTION: a clinical phrase goes on
    last_end = m.end()
    return "[NAME]" + keep
  return repl
