"""The demo university's programmes and their courses: six programmes of five courses, 30 in all.

The simulator's seed creates every course here (with manual enrolment); demo/make_people.py gives each
person a programme and three to five of its courses. Shortnames are uppercase letters and digits, and
none is one of the seed's other courses (MATH101, GER201, HIST110, ORIENT).
"""

from __future__ import annotations

PROGRAMMES: dict[str, tuple[tuple[str, str], ...]] = {
    "Mechanical Engineering": (
        ("MECH101", "Statics and Dynamics"),
        ("MECH205", "Thermodynamik I"),
        ("ENG210", "Engineering Drawing and CAD"),
        ("MAT150", "Materials Science"),
        ("MECH310", "Mécanique des fluides"),
    ),
    "Medicine and Health Sciences": (
        ("ANAT101", "Human Anatomy"),
        ("PHSL130", "Physiology I"),
        ("BIOC210", "Biochemistry"),
        ("PHAR220", "Pharmacology"),
        ("NURS150", "Fundamentals of Nursing Practice"),
    ),
    "Languages and Literature": (
        ("LIT120", "Littérature française du XIXe siècle"),
        ("SPA201", "Español avanzado: redacción"),
        ("PHIL110", "Introduction to Philosophy"),
        ("HIS230", "Historia del arte"),
        ("LING101", "Introduction to Linguistics"),
    ),
    "Economics": (
        ("ECO101", "Microéconomie"),
        ("ECO102", "Macroéconomie"),
        ("STAT140", "Statistics for Economists"),
        ("FIN210", "Corporate Finance"),
        ("ECO315", "Économie du développement"),
    ),
    "Chemistry and Life Sciences": (
        ("CHEM101", "General Chemistry"),
        ("CHEM220", "Organic Chemistry"),
        ("BIO110", "Cell Biology"),
        ("PHY101", "Physics I: Mechanics"),
        ("CALC120", "Calculus for Scientists"),
    ),
    "Law": (
        ("LAW101", "Introduction to Law"),
        ("LAW210", "Contract Law"),
        ("LAW220", "Droit constitutionnel"),
        ("LAW305", "Derecho internacional público"),
        ("LAW330", "Intellectual Property"),
    ),
}

COURSES: tuple[tuple[str, str], ...] = tuple(c for courses in PROGRAMMES.values() for c in courses)


def shortnames(programme: str) -> list[str]:
    """The course shortnames of one programme, in catalogue order."""
    return [shortname for shortname, _ in PROGRAMMES[programme]]
