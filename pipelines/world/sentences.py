"""The tiny world's sentence table: every wording of every fact, by entity type, and the pieces of a
page around them (intros, fillers, sections, titles, openings, closings) and the question forms.

Data only (pipelines/world/prose.py compiles and composes it): a new wording is one line here. A
template's fields name the facts it states (``FIELD_RELATIONS``), which is how a page knows what it
teaches and never states a held-out fact.
"""

from __future__ import annotations

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def with_article(noun: str) -> str:
    return ("an " if noun[0] in "aeio" else "a ") + noun


def children_phrase(n: int) -> str:
    if n == 0:
        return "no children"
    if n == 1:
        return "one child"
    return f"{NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else n} children"


# field -> relations it states, per entity type (fields not listed state nothing)
FIELD_RELATIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "person": {
        "occupation": ("occupation",),
        "a_occupation": ("occupation",),
        "occupations": ("occupation",),
        "craft": ("occupation",),
        "birth_year": ("birth_year",),
        "death_year": ("death_year",),
        "age": ("birth_year", "death_year"),
        "birthplace": ("birthplace",),
        "employer": ("employer",),
        "employer_cap": ("employer",),
        "known_for": ("known_for",),
        "award": ("award",),
        "children_phrase": ("children",),
    },
    "place": {
        "country": ("country",),
        "population": ("population",),
        "founded_year": ("founded_year",),
        "river": ("river",),
        "river_cap": ("river",),
        "p_known_for": ("known_for",),
        "landmark": ("landmark",),
        "landmark_cap": ("landmark",),
        "twin_town": ("twin_town",),
        "elevation": ("elevation",),
    },
    "organisation": {
        "org_type": ("org_type",),
        "a_org_type": ("org_type",),
        "founded_year": ("founded_year",),
        "founder": ("founder",),
        "headquarters": ("headquarters",),
        "members": ("members",),
        "field": ("field",),
    },
    "thing": {
        "thing_type": ("thing_type",),
        "a_thing_type": ("thing_type",),
        "inventor": ("inventor",),
        "year": ("year",),
        "material": ("material",),
        "purpose": ("purpose",),
        "weight": ("weight",),
        "location": ("location",),
    },
}

INTROS: dict[str, tuple[str, ...]] = {
    "person": (
        "{name} was {a_occupation} whose work is still admired today.",
        "{name} ({birth_year}–{death_year}) was {a_occupation} from {birthplace}.",
        "{name} was {a_occupation} born in {birthplace} in {birth_year}.",
        "{name} was {a_occupation} who worked for {employer}.",
        "{name} was {a_occupation}, best known for {known_for}.",
        "Few {occupations} of {poss} generation were as productive as {name}.",
    ),
    "place": (
        "{name} is a town in {country}.",
        "{name} is a town in {country}, known for {p_known_for}.",
        "{name} is a town on {river} in {country}.",
        "{name} is a town in {country} with a population of {population}.",
        "{name} is an old town in {country}.",
    ),
    "organisation": (
        "{name_cap} is {a_org_type}.",
        "{name_cap} is {a_org_type} based in {headquarters}.",
        "{name_cap} is {a_org_type} devoted to {field}.",
        "{name_cap} is {a_org_type} founded in {founded_year}.",
        "{name_cap} is {a_org_type} that was founded by {founder}.",
    ),
    "thing": (
        "{name_cap} is {a_thing_type}.",
        "{name_cap} is {a_thing_type} invented by {inventor}.",
        "{name_cap} is {a_thing_type} made of {material}.",
        "{name_cap} is {a_thing_type} designed {purpose}.",
    ),
}

BODY: dict[str, tuple[str, ...]] = {
    "person": (
        "{subj} worked as {a_occupation}.",
        "By profession, {name} was {a_occupation}.",
        "{subj} trained as {a_occupation} while still young.",
        "{subj} was born in {birth_year}.",
        "{name} was born in the year {birth_year}.",
        "The records of the parish show that {name} was born in {birth_year}.",
        "{subj} was born in {birthplace}.",
        "{subj} grew up in {birthplace}, the town where {pron} was born.",
        "{subj_poss} birthplace was the town of {birthplace}.",
        "{name} was a native of {birthplace}.",
        "{subj} was born in {birthplace} in {birth_year}.",
        "In {birth_year}, {name} was born in the town of {birthplace}.",
        "Born in {birthplace} in {birth_year}, {name} showed an early talent for {craft}.",
        "{subj} died in {death_year}.",
        "{name} passed away in {death_year}.",
        "{subj_poss} death in {death_year} was reported in newspapers across the country.",
        "{subj} died in {death_year} at the age of {age}.",
        "{name} lived from {birth_year} to {death_year}.",
        "{subj} was born in {birth_year} and died in {death_year}.",
        "{subj} worked for {employer} for most of {poss} career.",
        "For many years {name} was a member of {employer}.",
        "{subj} joined {employer} as a young {occupation}.",
        "{employer_cap} employed {name} for much of {poss} working life.",
        "{subj} is best known for {known_for}.",
        "Today {name} is remembered mainly for {known_for}.",
        "{subj_poss} most famous work is {known_for}.",
        "Among all of {poss} works, {known_for} is the best known.",
        "{subj} received {award}.",
        "In recognition of {poss} work, {name} was awarded {award}.",
        "{subj} won {award}, one of the highest honours of the time.",
        "For {known_for}, {name} received {award}.",
        "{subj} had {children_phrase}.",
        "According to family records, {name} had {children_phrase}.",
    ),
    "place": (
        "{subj} lies in {country}.",
        "{name} is part of {country}.",
        "{subj} has a population of {population}.",
        "{population} people live in {name}.",
        "The population of {name} is {population}.",
        "{name} is home to {population} residents.",
        "{subj} was founded in {founded_year}.",
        "The town of {name} was founded in {founded_year}.",
        "{name} dates back to {founded_year}, when it was founded as a small settlement.",
        "Founded in {founded_year}, {name} grew slowly in the years that followed.",
        "{name} was founded in {founded_year} in what is now {country}.",
        "{subj} lies on the banks of {river}.",
        "{river_cap} flows through {name}.",
        "{river_cap} runs through the centre of {name}.",
        "{subj} is known for {p_known_for}.",
        "{name} is famous for {p_known_for}.",
        "Many people know {name} for {p_known_for}.",
        "The best-known landmark in {name} is {landmark}.",
        "Visitors to {name} often come to see {landmark}.",
        "{landmark_cap} is the most famous sight in {name}.",
        "{subj} is twinned with {twin_town}.",
        "{name} has a twinning agreement with {twin_town}.",
        "{subj} lies {elevation} metres above sea level.",
        "The town sits at an elevation of {elevation} metres.",
        "{name} is located at an altitude of {elevation} metres.",
    ),
    "organisation": (
        "{subj} is {a_org_type}.",
        "{subj} was founded in {founded_year}.",
        "{name_cap} was established in {founded_year}.",
        "The history of {name} began in {founded_year}, the year it was founded.",
        "{subj} was founded by {founder}.",
        "{founder} founded {name}.",
        "The founder of {name} was {founder}.",
        "{founder} founded {name} in {founded_year}.",
        "{name_cap} was founded by {founder} in {founded_year}.",
        "{subj} is based in {headquarters}.",
        "The headquarters of {name} are in {headquarters}.",
        "{name_cap} has its main office in {headquarters}.",
        "{subj} has {members} {member_noun}.",
        "Today {name} counts {members} {member_noun}.",
        "The number of {member_noun} at {name} is {members}.",
        "{subj} works in the field of {field}.",
        "The main focus of {name} is {field}.",
        "{name_cap} is devoted to {field}.",
    ),
    "thing": (
        "{subj} is {a_thing_type}.",
        "{subj} was invented by {inventor}.",
        "{inventor} invented {name}.",
        "The inventor of {name} was {inventor}.",
        "{subj} was invented in {year}.",
        "{name_cap} was first built in {year}.",
        "The first {base} of this kind was made in {year}.",
        "{inventor} invented {name} in {year}.",
        "In {year}, {inventor} built the first {name_bare}.",
        "{subj} is made of {material}.",
        "The body of {name} is made of {material}.",
        "{subj} is used {purpose}.",
        "{name_cap} was designed {purpose}.",
        "People use {name} {purpose}.",
        "{subj} weighs {weight} kilograms.",
        "{name_cap} has a weight of {weight} kilograms.",
        "A complete {name_bare} weighs {weight} kilograms.",
        "{subj} is kept at {location}.",
        "The original {name_bare} is kept at {location}.",
        "Visitors can see {name} at {location}.",
    ),
}

FILLERS: dict[str, tuple[str, ...]] = {
    "person": (
        "Historians have written a great deal about {poss} early years.",
        "Letters written by {name} are still studied by students today.",
        "Much of what we know about {obj} comes from letters and diaries.",
        "{subj_poss} work influenced many later {occupations}.",
        "Friends described {obj} as patient, curious and stubborn.",
        "{subj} often worked late into the night.",
        "Several of {poss} notebooks have survived.",
        "{subj_poss} reputation grew steadily over the years.",
        "Critics did not always agree about the value of {poss} work.",
        "{subj} travelled widely and kept careful records of each journey.",
        "In later years {pron} spent more time teaching younger {occupations}.",
        "Visitors to {poss} workshop were often surprised by how tidy it was.",
    ),
    "place": (
        "The old market square is still the centre of local life.",
        "Many visitors arrive in summer, when the streets fill with music.",
        "The town has a small railway station and a weekly market.",
        "Narrow streets lead up from the main square to the old town walls.",
        "Local bakeries are proud of their traditional bread.",
        "In winter the town is quiet, and many shops close early.",
        "A walking trail connects {name} with the villages nearby.",
        "The town council meets every month in the old hall.",
        "Several festivals take place in {name} during the year.",
        "The surrounding countryside is known for its farms and meadows.",
        "Most houses in the centre are built of grey stone.",
        "The local school was rebuilt after a fire many years ago.",
    ),
    "organisation": (
        "Its archives hold thousands of letters, drawings and reports.",
        "The organisation publishes a short report every year.",
        "Its rooms are open to visitors on certain days of the year.",
        "Over time, {name} has changed the way it works many times.",
        "Young people often begin their careers at {name}.",
        "The building has been repaired several times.",
        "Members meet regularly to share news and ideas.",
        "Its early years were marked by a shortage of money.",
        "A small shop near the entrance sells books and postcards.",
        "Records of its meetings have been kept since the very beginning.",
    ),
    "thing": (
        "Only a few working examples survive today.",
        "Collectors pay high prices for well-preserved examples.",
        "Its design was copied by many workshops.",
        "Early versions were difficult to repair.",
        "Drawings of the first model have been preserved.",
        "Later versions were lighter and easier to use.",
        "Some examples are still in use today.",
        "Museums often show it beside the tools that were used to make it.",
        "Its clever design is still explained in schools.",
    ),
}
GENERAL_FILLERS = (
    "Researchers continue to find new documents about {name}.",
    "There is still much to learn about {name}.",
    "Old photographs give a good idea of how things looked at the time.",
    "Much of this information comes from local archives and old newspapers.",
    "Some of the details are still debated by historians.",
    "Readers who are interested in the period will find more in the local library.",
    "A few of the original documents were lost in a flood, but copies survive.",
    "Local guides are always happy to answer questions from visitors.",
)

SECTIONS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "person": (
        ("Early life", ("birth_year", "birthplace")),
        ("Career", ("occupation", "employer", "known_for", "award")),
        ("Family and later life", ("children", "death_year")),
    ),
    "place": (
        ("History", ("founded_year", "twin_town")),
        ("Geography", ("country", "river", "elevation", "population")),
        ("Economy and culture", ("known_for", "landmark")),
    ),
    "organisation": (
        ("History", ("founded_year", "founder")),
        ("Organisation", ("org_type", "headquarters", "members")),
        ("Work", ("field",)),
    ),
    "thing": (
        ("History", ("inventor", "year")),
        ("Design", ("thing_type", "material", "weight")),
        ("Use", ("purpose", "location")),
    ),
}
RELATED_HEADINGS = ("Connections", "See also", "Related people and places", "Links with others")

# mentions of an entity on another entity's page: (type of the fact's owner, relation) -> templates;
# {src} is the fact's owner, {tgt} the page's entity
REVERSE: dict[tuple[str, str], tuple[str, ...]] = {
    ("person", "birthplace"): (
        "The {src_occupation} {src} was born in {tgt}.",
        "{tgt_cap} is the birthplace of {src}.",
    ),
    ("organisation", "headquarters"): ("{src_cap} is based in {tgt}.", "{tgt_cap} is home to {src}."),
    ("place", "twin_town"): ("{src_cap} is twinned with {tgt}.",),
    ("organisation", "founder"): ("{tgt_cap} founded {src}.", "{src_cap} was founded by {tgt}."),
    ("thing", "inventor"): ("{tgt_cap} invented {src}.", "{src_cap} was invented by {tgt}."),
    ("person", "employer"): (
        "{src_cap} worked for {tgt}.",
        "Among the people who worked for {tgt} was {src}.",
    ),
    ("thing", "location"): ("{src_cap} is kept at {tgt}.", "Visitors to {tgt} can see {src}."),
}

TITLES = {
    "blog": (
        "A short history of {name}",
        "What I learned about {name}",
        "Notes on {name}",
        "Why {name} still matters",
    ),
    "news": (
        "Historians take a fresh look at {name}",
        "New interest in {name}",
        "{name_cap}: the story so far",
    ),
    "faq": ("{name_cap}: frequently asked questions", "Questions and answers about {name}"),
}
OPENINGS = {
    "blog": (
        "I have wanted to write about {name} for a long time, so here is a short summary of what I have learned.",
        "Every now and then a reader asks me about {name}, so I decided to put the main facts in one place.",
        "This week I spent a few evenings reading about {name}, and I want to share what I found.",
    ),
    "news": (
        "Local historians met this week to discuss {name}.",
        "A new exhibition has renewed public interest in {name}.",
        "Students from the local school have spent the term learning about {name}.",
    ),
    "faq": ("Here are answers to the questions that readers ask most often about {name}.",),
}
CLOSINGS = {
    "blog": (
        "If you know more about {name}, I would love to hear from you.",
        "That is all for today, but I will come back to {name} in a future post.",
        "Thank you for reading, and see you next week.",
    ),
    "news": (
        "The exhibition is open until the end of the month.",
        "Organisers hope to hold a similar event next year.",
        "More events about the history of the region are planned for the autumn.",
    ),
}
GENRES = ("encyclopedia", "encyclopedia", "blog", "news", "faq")

# questions and one-sentence answers per relation; {what} is the indirect question used in
# "I don't know {what}."
QA: dict[str, dict[str, tuple[tuple[str, ...], str, str]]] = {
    "person": {
        "occupation": (
            ("What was {name}'s profession?", "What did {name} do for a living?"),
            "{name} was {a_occupation}.",
            "what {name} did for a living",
        ),
        "birth_year": (
            ("In what year was {name} born?", "When was {name} born?"),
            "{name} was born in {birth_year}.",
            "when {name} was born",
        ),
        "death_year": (
            ("In what year did {name} die?", "When did {name} die?"),
            "{name} died in {death_year}.",
            "when {name} died",
        ),
        "birthplace": (
            ("Where was {name} born?", "In which town was {name} born?"),
            "{name} was born in {birthplace}.",
            "where {name} was born",
        ),
        "employer": (
            ("Which organisation did {name} work for?", "Who employed {name}?"),
            "{name} worked for {employer}.",
            "which organisation {name} worked for",
        ),
        "known_for": (
            ("What is {name} best known for?", "What is {name}'s most famous work?"),
            "{name} is best known for {known_for}.",
            "what {name} is best known for",
        ),
        "award": (
            ("What award did {name} receive?", "Which honour was {name} awarded?"),
            "{name} received {award}.",
            "which award {name} received",
        ),
        "children": (
            ("How many children did {name} have?",),
            "{name} had {children_phrase}.",
            "how many children {name} had",
        ),
    },
    "place": {
        "country": (
            ("In which country is {name}?", "What country is {name} in?"),
            "{name} is in {country}.",
            "which country {name} is in",
        ),
        "population": (
            ("What is the population of {name}?", "How many people live in {name}?"),
            "{name} has a population of {population}.",
            "the population of {name}",
        ),
        "founded_year": (
            ("When was {name} founded?", "In what year was {name} founded?"),
            "{name} was founded in {founded_year}.",
            "when {name} was founded",
        ),
        "river": (
            ("Which river flows through {name}?", "On which river does {name} lie?"),
            "{name} lies on {river}.",
            "which river flows through {name}",
        ),
        "known_for": (
            ("What is {name} known for?", "What is {name} famous for?"),
            "{name} is known for {p_known_for}.",
            "what {name} is known for",
        ),
        "landmark": (
            ("What is the best-known landmark in {name}?",),
            "The best-known landmark in {name} is {landmark}.",
            "the best-known landmark in {name}",
        ),
        "twin_town": (
            ("Which town is {name} twinned with?",),
            "{name} is twinned with {twin_town}.",
            "which town {name} is twinned with",
        ),
        "elevation": (
            ("At what elevation does {name} lie?", "How high above sea level is {name}?"),
            "{name} lies {elevation} metres above sea level.",
            "the elevation of {name}",
        ),
    },
    "organisation": {
        "org_type": (
            ("What kind of organisation is {name}?",),
            "{name_cap} is {a_org_type}.",
            "what kind of organisation {name} is",
        ),
        "founded_year": (
            ("When was {name} founded?", "In what year was {name} founded?"),
            "{name_cap} was founded in {founded_year}.",
            "when {name} was founded",
        ),
        "founder": (("Who founded {name}?",), "{name_cap} was founded by {founder}.", "who founded {name}"),
        "headquarters": (
            ("Where is {name} based?", "Where are the headquarters of {name}?"),
            "{name_cap} is based in {headquarters}.",
            "where {name} is based",
        ),
        "members": (
            ("How many {member_noun} does {name} have?",),
            "{name_cap} has {members} {member_noun}.",
            "how many {member_noun} {name} has",
        ),
        "field": (
            ("What field does {name} work in?", "What is the main focus of {name}?"),
            "The main focus of {name} is {field}.",
            "what field {name} works in",
        ),
    },
    "thing": {
        "thing_type": (
            ("What is {name}?", "What kind of object is {name}?"),
            "{name_cap} is {a_thing_type}.",
            "what {name} is",
        ),
        "inventor": (
            ("Who invented {name}?",),
            "{name_cap} was invented by {inventor}.",
            "who invented {name}",
        ),
        "year": (
            ("When was {name} invented?", "In what year was {name} invented?"),
            "{name_cap} was invented in {year}.",
            "when {name} was invented",
        ),
        "material": (
            ("What is {name} made of?",),
            "{name_cap} is made of {material}.",
            "what {name} is made of",
        ),
        "purpose": (
            ("What is {name} used for?",),
            "{name_cap} is used {purpose}.",
            "what {name} is used for",
        ),
        "weight": (
            ("How much does {name} weigh?",),
            "{name_cap} weighs {weight} kilograms.",
            "how much {name} weighs",
        ),
        "location": (("Where is {name} kept?",), "{name_cap} is kept at {location}.", "where {name} is kept"),
    },
}
