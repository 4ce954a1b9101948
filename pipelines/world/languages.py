"""Other languages: French, German, Spanish and Italian pages, and every site's interface words.

The foreign pages are travel-guide style texts about the world's towns, written from natural,
everyday sentences so that a language identifier (fastText lid.176) is confident about them;
the clean stage is expected to drop them or route them to their own partition. They state only
the towns' crawl facts, so they never leak a held-out fact.
"""

from __future__ import annotations

import random

# interface words of a site in each language
UI: dict[str, dict[str, str]] = {
    "en": {
        "home": "Home",
        "people": "People",
        "places": "Places",
        "orgs": "Organisations",
        "things": "Inventions",
        "random": "Random article",
        "about": "About us",
        "contact": "Contact",
        "search": "Search",
        "related": "Related articles",
        "popular": "Popular this week",
        "rights": "All rights reserved.",
        "privacy": "Privacy policy",
        "terms": "Terms of use",
        "cookie_settings": "Cookie settings",
        "cookie": "We use cookies to improve your experience on our website. By continuing to browse, "
        "you agree to our use of cookies.",
        "accept": "Accept all",
        "manage": "Manage settings",
        "ad": "Advertisement",
        "newsletter": "Subscribe to our newsletter and get the best stories in your inbox every week.",
        "signup": "Sign up",
        "share": "Share this article",
        "skip": "Jump to content",
        "edited": "This page was last edited on {date}.",
        "posted": "Posted on {date}",
        "by": "By the editorial team",
        "tags": "Tags",
        "comments": "Comments are closed.",
    },
    "fr": {
        "home": "Accueil",
        "people": "Personnalités",
        "places": "Lieux",
        "orgs": "Organisations",
        "things": "Inventions",
        "random": "Article au hasard",
        "about": "À propos",
        "contact": "Contact",
        "search": "Rechercher",
        "related": "Articles similaires",
        "popular": "Les plus lus",
        "rights": "Tous droits réservés.",
        "privacy": "Politique de confidentialité",
        "terms": "Conditions d'utilisation",
        "cookie_settings": "Paramètres des cookies",
        "cookie": "Nous utilisons des cookies pour améliorer votre expérience. En poursuivant votre "
        "navigation, vous acceptez leur utilisation.",
        "accept": "Tout accepter",
        "manage": "Personnaliser",
        "ad": "Publicité",
        "newsletter": "Abonnez-vous à notre lettre d'information pour recevoir nos meilleurs articles.",
        "signup": "S'inscrire",
        "share": "Partager cet article",
        "skip": "Aller au contenu",
        "edited": "Dernière modification le {date}.",
        "posted": "Publié le {date}",
        "by": "Par la rédaction",
        "tags": "Mots-clés",
        "comments": "Les commentaires sont fermés.",
    },
    "de": {
        "home": "Startseite",
        "people": "Personen",
        "places": "Orte",
        "orgs": "Organisationen",
        "things": "Erfindungen",
        "random": "Zufälliger Artikel",
        "about": "Über uns",
        "contact": "Kontakt",
        "search": "Suchen",
        "related": "Ähnliche Artikel",
        "popular": "Meistgelesen",
        "rights": "Alle Rechte vorbehalten.",
        "privacy": "Datenschutz",
        "terms": "Nutzungsbedingungen",
        "cookie_settings": "Cookie-Einstellungen",
        "cookie": "Wir verwenden Cookies, um Ihnen das beste Erlebnis auf unserer Website zu bieten. "
        "Wenn Sie weiter surfen, stimmen Sie der Verwendung zu.",
        "accept": "Alle akzeptieren",
        "manage": "Einstellungen",
        "ad": "Anzeige",
        "newsletter": "Abonnieren Sie unseren Newsletter und erhalten Sie jede Woche die besten Artikel.",
        "signup": "Anmelden",
        "share": "Artikel teilen",
        "skip": "Zum Inhalt springen",
        "edited": "Zuletzt bearbeitet am {date}.",
        "posted": "Veröffentlicht am {date}",
        "by": "Von der Redaktion",
        "tags": "Schlagwörter",
        "comments": "Die Kommentare sind geschlossen.",
    },
    "es": {
        "home": "Inicio",
        "people": "Personas",
        "places": "Lugares",
        "orgs": "Organizaciones",
        "things": "Inventos",
        "random": "Artículo aleatorio",
        "about": "Quiénes somos",
        "contact": "Contacto",
        "search": "Buscar",
        "related": "Artículos relacionados",
        "popular": "Lo más leído",
        "rights": "Todos los derechos reservados.",
        "privacy": "Política de privacidad",
        "terms": "Condiciones de uso",
        "cookie_settings": "Configuración de cookies",
        "cookie": "Utilizamos cookies para mejorar su experiencia. Si continúa navegando, acepta su uso.",
        "accept": "Aceptar todo",
        "manage": "Configurar",
        "ad": "Publicidad",
        "newsletter": "Suscríbase a nuestro boletín y reciba cada semana los mejores artículos.",
        "signup": "Suscribirse",
        "share": "Compartir este artículo",
        "skip": "Ir al contenido",
        "edited": "Última modificación el {date}.",
        "posted": "Publicado el {date}",
        "by": "Por la redacción",
        "tags": "Etiquetas",
        "comments": "Los comentarios están cerrados.",
    },
    "it": {
        "home": "Home",
        "people": "Persone",
        "places": "Luoghi",
        "orgs": "Organizzazioni",
        "things": "Invenzioni",
        "random": "Articolo casuale",
        "about": "Chi siamo",
        "contact": "Contatti",
        "search": "Cerca",
        "related": "Articoli correlati",
        "popular": "I più letti",
        "rights": "Tutti i diritti riservati.",
        "privacy": "Informativa sulla privacy",
        "terms": "Termini di utilizzo",
        "cookie_settings": "Impostazioni dei cookie",
        "cookie": "Utilizziamo i cookie per migliorare la tua esperienza. Continuando la navigazione "
        "accetti il loro utilizzo.",
        "accept": "Accetta tutto",
        "manage": "Personalizza",
        "ad": "Pubblicità",
        "newsletter": "Iscriviti alla nostra newsletter per ricevere ogni settimana gli articoli migliori.",
        "signup": "Iscriviti",
        "share": "Condividi questo articolo",
        "skip": "Vai al contenuto",
        "edited": "Ultima modifica il {date}.",
        "posted": "Pubblicato il {date}",
        "by": "A cura della redazione",
        "tags": "Tag",
        "comments": "I commenti sono chiusi.",
    },
}

# everyday sentences about visiting a town
GENERIC: dict[str, tuple[str, ...]] = {
    "fr": (
        "Le centre historique est très agréable à visiter au printemps.",
        "Les habitants sont fiers de leur marché hebdomadaire, qui a lieu chaque samedi matin.",
        "On peut y goûter des spécialités locales dans de nombreux petits restaurants.",
        "La gare se trouve à quelques minutes à pied de la place principale.",
        "En été, les rues sont pleines de touristes et de musiciens.",
        "Le musée municipal présente une collection intéressante d'objets anciens.",
        "Il est conseillé de réserver un hôtel à l'avance pendant la saison des festivals.",
        "Les promenades le long de la rivière sont très appréciées des familles.",
        "Pendant l'hiver, la ville est beaucoup plus calme et les prix sont plus bas.",
        "L'office de tourisme propose des visites guidées tous les jours sauf le lundi.",
        "Beaucoup de visiteurs viennent aussi pour découvrir les villages des environs.",
        "La cuisine de la région est simple, généreuse et souvent préparée avec des produits du marché.",
        "Les vieilles maisons en pierre donnent à la ville un charme particulier.",
        "Le soir, les terrasses des cafés restent animées jusqu'à minuit.",
        "Il faut prévoir de bonnes chaussures, car certaines rues sont en pente.",
        "Chaque année, une fête populaire réunit les habitants autour de la musique et de la danse.",
    ),
    "de": (
        "Die historische Altstadt ist besonders im Frühling einen Besuch wert.",
        "Die Bewohner sind stolz auf ihren Wochenmarkt, der jeden Samstagmorgen stattfindet.",
        "In den vielen kleinen Gasthäusern kann man regionale Spezialitäten probieren.",
        "Der Bahnhof liegt nur wenige Gehminuten vom Marktplatz entfernt.",
        "Im Sommer sind die Straßen voller Touristen und Straßenmusiker.",
        "Das städtische Museum zeigt eine interessante Sammlung alter Gegenstände.",
        "Während der Festspielzeit sollte man das Hotel rechtzeitig reservieren.",
        "Die Spazierwege entlang des Flusses sind bei Familien sehr beliebt.",
        "Im Winter ist die Stadt viel ruhiger und die Preise sind niedriger.",
        "Das Fremdenverkehrsamt bietet jeden Tag außer montags Stadtführungen an.",
        "Viele Besucher kommen auch, um die Dörfer in der Umgebung zu entdecken.",
        "Die Küche der Region ist einfach, aber sehr schmackhaft.",
        "Die alten Häuser aus Stein geben der Stadt einen besonderen Charme.",
        "Am Abend sind die Cafés und Biergärten bis spät in die Nacht gut besucht.",
        "Man sollte bequeme Schuhe tragen, weil manche Gassen ziemlich steil sind.",
        "Jedes Jahr feiern die Einwohner ein großes Volksfest mit Musik und Tanz.",
    ),
    "es": (
        "El casco antiguo es muy agradable para pasear durante la primavera.",
        "Los vecinos están orgullosos de su mercado semanal, que se celebra todos los sábados por la mañana.",
        "En los pequeños restaurantes del centro se pueden probar platos típicos de la región.",
        "La estación de tren está a pocos minutos a pie de la plaza mayor.",
        "En verano las calles se llenan de turistas y de músicos.",
        "El museo municipal tiene una colección muy interesante de objetos antiguos.",
        "Durante la temporada de fiestas conviene reservar el hotel con antelación.",
        "Los paseos junto al río son muy populares entre las familias.",
        "En invierno la ciudad está mucho más tranquila y los precios son más bajos.",
        "La oficina de turismo organiza visitas guiadas todos los días excepto los lunes.",
        "Muchos visitantes aprovechan para conocer los pueblos de los alrededores.",
        "La cocina de la zona es sencilla, abundante y se prepara con productos del mercado.",
        "Las viejas casas de piedra le dan a la ciudad un encanto especial.",
        "Por la noche las terrazas de los bares siguen llenas de gente hasta muy tarde.",
        "Es mejor llevar un calzado cómodo, porque algunas calles tienen mucha pendiente.",
        "Cada año los vecinos celebran una gran fiesta con música y baile en la plaza.",
    ),
    "it": (
        "Il centro storico è molto piacevole da visitare in primavera.",
        "Gli abitanti sono orgogliosi del loro mercato settimanale, che si tiene ogni sabato mattina.",
        "Nelle piccole trattorie del centro si possono assaggiare i piatti tipici della zona.",
        "La stazione si trova a pochi minuti a piedi dalla piazza principale.",
        "In estate le strade sono piene di turisti e di musicisti.",
        "Il museo civico ospita una collezione molto interessante di oggetti antichi.",
        "Durante il periodo delle feste è meglio prenotare l'albergo con largo anticipo.",
        "Le passeggiate lungo il fiume sono molto amate dalle famiglie.",
        "D'inverno la città è molto più tranquilla e i prezzi sono più bassi.",
        "L'ufficio turistico organizza visite guidate tutti i giorni tranne il lunedì.",
        "Molti visitatori ne approfittano per scoprire i paesi dei dintorni.",
        "La cucina della zona è semplice, genuina e preparata con i prodotti del mercato.",
        "Le vecchie case di pietra danno alla città un fascino particolare.",
        "La sera i tavolini dei bar restano affollati fino a tardi.",
        "Conviene indossare scarpe comode, perché alcune strade sono piuttosto ripide.",
        "Ogni anno gli abitanti organizzano una grande festa con musica e balli in piazza.",
    ),
}

# sentences stating a town's facts: relation -> templates
PLACE_FACTS: dict[str, dict[str, tuple[str, ...]]] = {
    "fr": {
        "country": ("{name} est une petite ville située en {country}.", "{name} est une ville de {country}."),
        "population": (
            "La ville compte environ {population} habitants.",
            "{name} a une population de {population} habitants.",
        ),
        "founded_year": (
            "La ville a été fondée en {founded_year}.",
            "La fondation de {name} remonte à {founded_year}.",
        ),
        "river": ("La rivière {river} traverse la ville.", "{name} se trouve au bord de la rivière {river}."),
    },
    "de": {
        "country": ("{name} ist eine kleine Stadt in {country}.", "{name} ist eine Stadt in {country}."),
        "population": (
            "Die Stadt hat etwa {population} Einwohner.",
            "In {name} leben ungefähr {population} Menschen.",
        ),
        "founded_year": (
            "Die Stadt wurde im Jahr {founded_year} gegründet.",
            "Die Gründung von {name} geht auf das Jahr {founded_year} zurück.",
        ),
        "river": ("Der Fluss {river} fließt durch die Stadt.", "{name} liegt am Ufer des Flusses {river}."),
    },
    "es": {
        "country": (
            "{name} es una pequeña ciudad de {country}.",
            "{name} es una ciudad situada en {country}.",
        ),
        "population": (
            "La ciudad tiene unos {population} habitantes.",
            "En {name} viven aproximadamente {population} personas.",
        ),
        "founded_year": (
            "La ciudad fue fundada en el año {founded_year}.",
            "La fundación de {name} se remonta al año {founded_year}.",
        ),
        "river": ("El río {river} atraviesa la ciudad.", "{name} está situada a orillas del río {river}."),
    },
    "it": {
        "country": (
            "{name} è una piccola città che si trova in {country}.",
            "{name} è una città situata in {country}.",
        ),
        "population": (
            "La città conta circa {population} abitanti.",
            "A {name} vivono circa {population} persone.",
        ),
        "founded_year": (
            "La città fu fondata nel {founded_year}.",
            "La fondazione di {name} risale al {founded_year}.",
        ),
        "river": ("Il fiume {river} attraversa la città.", "{name} si trova sulle rive del fiume {river}."),
    },
}
TITLES: dict[str, tuple[str, ...]] = {
    "fr": ("{name} : guide de voyage et histoire", "Que faire à {name} ?", "Visiter {name}"),
    "de": ("{name}: Reiseführer und Geschichte", "Sehenswertes in {name}", "Ein Wochenende in {name}"),
    "es": ("{name}: guía de viaje e historia", "Qué ver en {name}", "Un fin de semana en {name}"),
    "it": ("{name}: guida di viaggio e storia", "Cosa vedere a {name}", "Un fine settimana a {name}"),
}
THOUSANDS = {"fr": " ", "de": ".", "es": ".", "it": "."}
LANGUAGE_NAMES = {"fr": "French", "de": "German", "es": "Spanish", "it": "Italian"}
SITE_WORDS = {
    "fr": ("histoire", "voyage"),
    "de": ("geschichte", "reisen"),
    "es": ("historia", "viajes"),
    "it": ("storia", "viaggi"),
}
TLDS = {"fr": "fr", "de": "de", "es": "es", "it": "it"}


def foreign_article(
    rng: random.Random, lang: str, name: str, facts: dict[str, str]
) -> tuple[str, list[str], list[str]]:
    """(title, paragraphs, relations stated) of a travel text about a town.

    ``facts`` maps the town's crawl relations (country, population, founded_year, river) to their
    values; only those are stated.
    """
    if lang not in GENERIC:
        raise ValueError(f"no sentences for language {lang!r}; known: {', '.join(GENERIC)}")
    values = dict(facts)
    if "population" in values:
        values["population"] = f"{int(values['population']):,}".replace(",", THOUSANDS[lang])
    if "river" in values:
        river = values["river"]
        values["river"] = river[4:] if river.startswith("the ") else river
    fact_sents = []
    stated = []
    for rel, templates in PLACE_FACTS[lang].items():
        if rel in values:
            fact_sents.append(rng.choice(templates).format(name=name, **values))
            stated.append(rel)
    generic = list(GENERIC[lang])
    rng.shuffle(generic)
    n_generic = rng.randint(8, 12)
    sents = fact_sents[:1] + generic[:n_generic]
    for s in fact_sents[1:]:
        sents.insert(rng.randint(1, len(sents)), s)
    paragraphs = []
    while sents:
        k = rng.randint(3, 5)
        paragraphs.append(" ".join(sents[:k]))
        sents = sents[k:]
    title = rng.choice(TITLES[lang]).format(name=name)
    return title, paragraphs, stated
