#!/usr/bin/env python3
"""Deterministic generator for benchbox's license-clean quality eval sets.

Every item is composed from templates and vocabulary lists written for this
file; no text is copied from any existing dataset.  Running the script writes

    quality/voice.jsonl                voice assistant intent classification
    quality/extraction.jsonl           business documents -> strict JSON
    quality/schemas/invoice.schema.json
    quality/coding.jsonl               small Python function tasks

and then self-checks the result (schema validation of the extraction
references, "value is really in the document" checks, coding references run
against their own tests).  Output is byte-for-byte reproducible: each set uses
its own fixed-seed ``random.Random`` and items are serialised with a fixed key
order, ``ensure_ascii=False`` and ``\\n`` line endings.

Usage:
    python quality/generate.py           # regenerate + self-check
    python quality/generate.py --check   # self-check, and fail if files on disk are stale

Only the standard library is needed to generate; the self-check additionally
imports ``jsonschema``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
import re
import sys
import textwrap
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent

SEED = 20250611
VOICE_SEED = SEED + 1
EXTRACTION_SEED = SEED + 2
CODING_SEED = SEED + 3

N_ITEMS = 240  # per file

ITEM_KEYS = ("id", "messages", "prompt", "reference", "slices", "max_tokens", "meta")
REQUIRED_KEYS = ("id", "reference", "slices")

# The documented slice tags per set (README.md lists the same).
SLICE_TAGS: dict[str, tuple[str, ...]] = {
    "voice": ("easy", "hard", "multilingual", "short_context", "long_context", "rare_label"),
    "extraction": ("strict_json", "easy", "hard", "long_context", "multilingual", "missing_field"),
    "coding": ("easy", "hard", "short_context", "long_context"),
}

FILES = {
    "voice": "voice.jsonl",
    "extraction": "extraction.jsonl",
    "coding": "coding.jsonl",
}


def _word_count(text: str) -> int:
    return len(text.split())


def _slices(kind: str, tags: list[str]) -> list[str]:
    """Order tags as in SLICE_TAGS and reject unknown ones."""
    known = SLICE_TAGS[kind]
    unknown = [t for t in tags if t not in known]
    if unknown:
        raise ValueError(f"unknown {kind} slice tags: {unknown}")
    return [t for t in known if t in tags]


def _fill(rng: random.Random, template: str, slots: dict[str, list[str]]) -> str:
    """Replace {name} placeholders with random choices; a name used twice gets the same value.

    ``{name2}`` draws a value of ``name`` that differs from ``{name}``.
    """
    chosen: dict[str, str] = {}

    def repl(m: re.Match[str]) -> str:
        key = m.group(1)
        if key in chosen:
            return chosen[key]
        base = key[:-1] if key.endswith("2") and key[:-1] in slots else key
        options = slots[base]
        if base != key:
            options = [o for o in options if o != chosen.get(base)]
        value = rng.choice(options)
        chosen[key] = value
        return value

    return re.sub(r"\{([a-z_0-9]+)\}", repl, template)


# ---------------------------------------------------------------------------
# 1. Voice assistant: intent classification of transcribed utterances
# ---------------------------------------------------------------------------

VOICE_LABELS: list[tuple[str, str]] = [
    ("set_timer", "start a countdown timer for some duration"),
    ("play_music", "play music, a playlist, an artist, an album or a genre"),
    ("weather_query", "ask about the weather or the forecast"),
    ("call_contact", "start a phone or video call with a person or place"),
    ("send_message", "send a text or chat message to someone"),
    ("navigation", "get directions or start navigation to a place"),
    ("smart_home_lights", "turn lights on or off, dim them or change their colour"),
    ("add_to_shopping_list", "add an item to the shopping list"),
    ("cancel",
     "stop, cancel or dismiss the current or a previous request (timers, alarms, messages, routes)"),
    ("volume_change", "change, mute or unmute the speaker volume"),
    ("check_balance", "ask for a bank account balance"),
    ("report_fraud", "report a suspicious or unauthorised charge, or a lost or stolen card"),
    ("medical_emergency", "someone is hurt, ill or in danger and needs urgent medical help "
     "(takes priority over call_contact)"),
]
VOICE_LABEL_NAMES = [name for name, _ in VOICE_LABELS]
VOICE_RARE = ("check_balance", "report_fraud", "medical_emergency")
# Skewed on purpose: a long tail with three rare labels (7/240 = 2.9% each).
VOICE_COUNTS = {
    "set_timer": 32,
    "play_music": 30,
    "weather_query": 28,
    "call_contact": 24,
    "send_message": 22,
    "navigation": 22,
    "smart_home_lights": 20,
    "add_to_shopping_list": 16,
    "cancel": 13,
    "volume_change": 12,
    "check_balance": 7,
    "report_fraud": 7,
    "medical_emergency": 7,
}
VOICE_N_MULTILINGUAL = 24
VOICE_N_LONG = 16
VOICE_HARD_RATE = 0.45

VOICE_SYSTEM_PROMPT = (
    "You are the intent classifier of a voice assistant. The user turn is an automatic speech "
    "transcript: it may be lowercase, unpunctuated or disfluent, and it may be in English, Spanish, "
    "French or German. Decide what the speaker wants and classify it into exactly one of these intents:\n"
    + "\n".join(f"- {name}: {desc}" for name, desc in VOICE_LABELS)
    + "\n\nAnswer with exactly one label from the list, written exactly as above, and nothing else: "
    "no punctuation, no explanation."
)

V_SLOTS: dict[str, list[str]] = {
    "dur": ["five minutes", "ten minutes", "fifteen minutes", "twenty minutes", "thirty seconds",
            "ninety seconds", "three minutes", "forty five minutes", "an hour", "half an hour",
            "one hour and fifteen minutes", "two hours", "12 minutes", "25 minutes", "eight minutes"],
    "food": ["pasta", "eggs", "rice", "cookies", "pizza", "roast", "tea", "bread", "potatoes", "lasagna",
             "muffins", "soup"],
    "genre": ["jazz", "lo-fi beats", "classical music", "my workout playlist", "something relaxing",
              "eighties rock", "the road trip playlist", "acoustic covers", "country", "hip hop",
              "the new album by the velvet lanterns", "songs by marigold avenue", "my liked songs",
              "piano music for focus", "reggae", "the dinner party mix"],
    "city": ["chicago", "seattle", "denver", "boston", "austin", "london", "paris", "berlin", "toronto",
             "madrid", "sydney", "portland", "miami", "dublin", "phoenix", "oslo"],
    "when": ["today", "tomorrow", "tonight", "this weekend", "on saturday", "tomorrow morning",
             "this afternoon", "on friday"],
    "contact": ["mom", "dad", "priya", "marcus", "aunt linda", "dr okafor", "jamie", "the office",
                "grandma", "kenji", "sofia", "my brother", "coach daniels", "rachel from work", "tomás",
                "uncle ray"],
    "msg": ["i'm running late", "dinner's at seven", "can you grab milk on the way home", "happy birthday",
            "call me when you land", "i'm outside", "the meeting moved to three", "don't forget the tickets",
            "i'll be there in ten", "love you", "the package arrived", "we're at table six"],
    "place": ["the nearest gas station", "grandma's house", "the airport", "downtown", "the closest pharmacy",
              "union station", "work", "the hardware store on fifth", "the beach", "maple street",
              "the stadium", "my place", "the public library", "the farmers market", "terminal two"],
    "room": ["kitchen", "living room", "bedroom", "bathroom", "hallway", "office", "garage", "porch",
             "dining room", "kids' room", "basement", "nursery"],
    "pct": ["twenty", "thirty", "fifty", "10", "40", "seventy five", "sixty"],
    "item": ["milk", "eggs", "paper towels", "bananas", "coffee", "dish soap", "oat milk", "bread",
             "olive oil", "batteries", "cat food", "toothpaste", "rice", "apples", "trash bags", "butter",
             "tortillas", "lemons"],
    "cobj": ["the timer", "the alarm", "that message", "the navigation", "my last request", "the reminder",
             "the route", "the pasta timer", "that text"],
    "vol": ["five", "ten", "three", "seven", "2", "8", "four"],
    "amount": ["forty dollars", "two hundred bucks", "eighty nine ninety nine",
               "a hundred and twelve dollars",
               "sixty pounds", "three hundred euros"],
    "store": ["some electronics place", "a gas station in ohio", "an online shop",
              "a restaurant i've never been to",
              "a hotel in another country", "a jewelry store"],
    "person": ["my dad", "my wife", "my husband", "my neighbor", "my son", "my daughter",
               "this guy on the sidewalk",
               "my grandmother", "my coworker", "my friend"],
}

V_TEMPLATES: dict[str, dict[str, list[str]]] = {
    "set_timer": {
        "easy": ["set a timer for {dur}", "put a timer on for {dur}", "timer for {dur}",
                 "set a timer for {dur} for the {food}", "can you set a timer for {dur}",
                 "start a timer {dur}", "countdown {dur}"],
        "hard": ["can you let me know when {dur} is up i've got {food} going",
                 "give me a shout in {dur} the {food} should be done by then",
                 "remind me in {dur} no wait not a reminder just a timer for {dur}",
                 "the kids' music practice is {dur} so count that down for me",
                 "okay the {food} is in i need a countdown for {dur}",
                 "start the clock for {dur} and don't let me forget the {food}",
                 "how long does the {food} need oh wait i know it's {dur} just time it",
                 "i'm going to call my mom after the {food} is done so set a timer for {dur}"],
    },
    "play_music": {
        "easy": ["play {genre}", "put on {genre}", "play {genre} please", "i want to listen to {genre}",
                 "shuffle {genre}", "start playing {genre}"],
        "hard": ["could you throw on {genre}", "it's way too quiet in here put on {genre}",
                 "before i call {contact} can you put on "
                 "{genre}", "i'm in the mood for {genre} can you do that",
                 "not the podcast i said play {genre}",
                 "what was that thing we listened to yesterday {genre} yeah that one start it",
                 "music please something like {genre}", "let's get {genre} going in the {room}"],
    },
    "weather_query": {
        "easy": ["what's the weather in {city}", "what's the weather like {when}", "will it rain {when}",
                 "what's the forecast for {when}", "how hot is it going to be {when}",
                 "is it going to snow in {city} {when}", "weather in {city} {when}"],
        "hard": ["should i bring an umbrella {when}", "do i need a jacket if i'm heading to {city} {when}",
                 "is it gonna be nice out for the barbecue {when}",
                 "what's it doing outside right now in {city} like is it cold",
                 "before i set a timer for the grill is it supposed to rain {when}",
                 "the kids want to play outside {when} is it going to be warm enough",
                 "how's it looking in {city} {when} temperature wise"],
    },
    "call_contact": {
        "easy": ["call {contact}", "phone {contact}", "give {contact} a call", "dial {contact}",
                 "call {contact} on speaker", "call {contact} please", "start a call with {contact}"],
        "hard": ["can you get {contact} on the line", "i need to talk to {contact} right now ring them",
                 "don't text {contact} just call them", "video call {contact} when you get a sec",
                 "hmm is {contact} free let's try ringing "
                 "them", "get me {contact} on the phone the message can wait"],
    },
    "send_message": {
        "easy": ["text {contact} {msg}", "send a message to {contact} saying {msg}",
                 "message {contact} that {msg}",
                 "send {contact} a text that says {msg}", "text {contact} saying {msg}"],
        "hard": ["shoot {contact} a quick note {msg}", "don't call {contact} just text them {msg}",
                 "let {contact} know {msg} by text", "can you whatsapp {contact} {msg}",
                 "write to {contact} {msg} and send it", "tell {contact} in a text {msg}"],
    },
    "navigation": {
        "easy": ["navigate to {place}", "directions to {place}", "take me to {place}",
                 "how do i get to {place}",
                 "start navigation to {place}", "get directions to {place}"],
        "hard": ["what's the fastest way to {place} avoiding the highway", "i'm lost get me to {place}",
                 "which way to {place} is there traffic",
                 "i need to be at {place} in twenty minutes which way do i go",
                 "i'm heading to {place} can you guide me", "how far is {place} start the route"],
    },
    "smart_home_lights": {
        "easy": ["turn on the {room} lights", "turn off the lights in the {room}",
                 "dim the {room} lights to {pct} percent",
                 "switch off the {room} light", "make the {room} lights brighter", "lights on in the {room}"],
        "hard": ["it's kind of dark in the {room} can you do something about that",
                 "lights off in the {room}",
                 "set the {room} to movie mode dim everything", "turn the {room} lamp to warm white",
                 "turn it down the lights i mean in the {room}", "i can't see a thing in the {room}"],
    },
    "add_to_shopping_list": {
        "easy": ["add {item} to my shopping list", "put {item} on the grocery list", "add {item} to the list",
                 "i need {item} add it to my shopping list", "shopping list add {item}"],
        "hard": ["we're out of {item} remember that for the next grocery run",
                 "stick {item} and {item2} on the list",
                 "text no put {item} on my shopping list",
                 "when i go to the store i need {item} can you note that down on the list",
                 "oh and {item} we need {item} for the shopping"],
    },
    "cancel": {
        "easy": ["cancel", "cancel that", "never mind", "cancel {cobj}", "stop {cobj}", "forget it",
                 "cancel {cobj} please"],
        "hard": ["actually no scratch that", "wait wait don't send that", "nope not that one stop",
                 "oh never mind about {cobj}", "hold on don't do it call it off",
                 "ugh i changed my mind forget {cobj}"],
    },
    "volume_change": {
        "easy": ["turn it up", "volume down", "turn the volume up to {vol}", "make it louder",
                 "lower the volume",
                 "mute", "set the volume to {vol}", "turn the volume down a bit"],
        "hard": ["i can barely hear this", "can you make the music a bit quieter", "whoa that's way too loud",
                 "crank it", "turn it down a notch the neighbors are complaining",
                 "louder louder i can't hear the song"],
    },
    "check_balance": {
        "easy": ["what's my account balance", "how much money is in my checking account",
                 "check my savings balance",
                 "what's my bank balance", "tell me my balance"],
        "hard": ["do i have enough in checking to cover rent",
                 "how much have i got left in my account after payday",
                 "before i send {contact} money how much do i even have"],
    },
    "report_fraud": {
        "easy": ["report a fraudulent charge on my card", "my credit card was stolen",
                 "i need to report fraud on my "
                 "account", "someone stole my debit card", "report a suspicious charge"],
        "hard": ["there's a charge for {amount} from {store} that i never made",
                 "i checked my balance and there's a payment i definitely didn't make",
                 "i lost my wallet and someone's been using my card"],
    },
    "medical_emergency": {
        "easy": ["call an ambulance", "i need emergency medical help", "someone is having a heart attack",
                 "get me an ambulance now", "i need a paramedic"],
        "hard": ["{person} just collapsed and isn't breathing right",
                 "my kid swallowed something and she's choking",
                 "call i think i'm having a stroke my face is numb",
                 "{person} fell off a ladder and there's a lot of blood"],
    },
}

# Multilingual utterances (written for this file; simple everyday phrasing).
V_ML_SLOTS: dict[str, list[str]] = {
    "n": ["5", "10", "15", "20", "3", "8", "25"],
    "name": ["maría", "carlos", "lucía", "jean", "camille", "lukas", "anna", "pedro", "sophie", "jonas"],
    "city": ["madrid", "sevilla", "lyon", "marseille", "münchen", "hamburg", "bilbao", "bordeaux", "zürich"],
    "g_es": ["jazz", "clásica", "relajante", "de los ochenta", "para estudiar"],
    "pl_es": ["deporte", "viaje", "la cena"],
    "g_fr": ["jazz", "classique", "relaxante", "des années quatre-vingt", "pour travailler"],
    "pl_fr": ["de sport", "du voyage", "du soir"],
    "g_de": ["etwas jazz", "klassische musik", "entspannte musik", "musik aus den achtzigern"],
    "pl_de": ["sport", "roadtrip", "abend"],
    "when_es": ["mañana", "esta tarde", "el fin de semana", "esta noche"],
    "when_fr": ["demain", "cet après-midi", "ce week-end", "ce soir"],
    "when_de": ["morgen", "heute nachmittag", "am wochenende", "heute abend"],
    "place_es": ["a la estación de tren", "al aeropuerto", "a la farmacia más cercana", "a casa",
                 "al centro"],
    "place_fr": ["à la gare", "à l'aéroport", "à la pharmacie la plus proche", "à la maison",
                 "au centre-ville"],
    "place_de": ["zum bahnhof", "zum flughafen", "zur nächsten apotheke", "nach hause", "in die innenstadt"],
    "room_es": ["de la cocina", "del salón", "del dormitorio", "del baño", "del pasillo"],
    "room_fr": ["de la cuisine", "du salon", "de la chambre", "de la salle de bain", "du couloir"],
    "room_de": ["in der küche", "im wohnzimmer", "im schlafzimmer", "im bad", "im flur"],
    "item_es": ["leche", "huevos", "pan", "café", "manzanas", "arroz"],
    "item_fr": ["du lait", "des œufs", "du pain", "du café", "des pommes", "du riz"],
    "item_de": ["milch", "eier", "brot", "kaffee", "äpfel", "reis"],
}

# label -> language -> [(template, difficulty)]
V_ML_TEMPLATES: dict[str, dict[str, list[tuple[str, str]]]] = {
    "set_timer": {
        "es": [("pon un temporizador de {n} minutos", "easy"),
               ("oye eh avísame en {n} minutos que tengo la pasta en el fuego", "hard")],
        "fr": [("mets un minuteur de {n} minutes", "easy"),
               ("euh tu peux me prévenir dans {n} minutes pour les pâtes", "hard")],
        "de": [("stell einen timer auf {n} minuten", "easy"),
               ("äh sag mir in {n} minuten bescheid wegen der nudeln", "hard")],
    },
    "play_music": {
        "es": [("pon música {g_es}", "easy"), ("reproduce mi lista de {pl_es}", "easy")],
        "fr": [("mets de la musique {g_fr}", "easy"), ("joue ma playlist {pl_fr}", "easy")],
        "de": [("spiel {g_de}", "easy"), ("äh mach mal meine {pl_de} playlist an", "hard")],
    },
    "weather_query": {
        "es": [("qué tiempo hace en {city}", "easy"), ("va a llover {when_es}", "easy"),
               ("eh necesito paraguas {when_es}", "hard")],
        "fr": [("quel temps fait-il à {city}", "easy"), ("est-ce qu'il va pleuvoir {when_fr}", "easy"),
               ("euh je prends un parapluie {when_fr} ou pas", "hard")],
        "de": [("wie ist das wetter in {city}", "easy"), ("regnet es {when_de}", "easy"),
               ("brauch ich {when_de} eine jacke", "hard")],
    },
    "call_contact": {
        "es": [("llama a {name}", "easy"), ("eh ponme con {name} por teléfono", "hard")],
        "fr": [("appelle {name}", "easy"), ("euh tu peux appeler {name} pas un message un appel", "hard")],
        "de": [("ruf {name} an", "easy"), ("äh kannst du mal {name} anrufen", "easy")],
    },
    "send_message": {
        "es": [("manda un mensaje a {name} diciendo que llego tarde", "easy"),
               ("escríbele a {name} que ya estoy fuera", "easy")],
        "fr": [("envoie un message à {name} pour dire que j'arrive en retard", "easy"),
               ("écris à {name} que je suis devant la porte", "easy")],
        "de": [("schick {name} eine nachricht dass ich später komme", "easy"),
               ("schreib {name} dass ich schon unten warte", "easy")],
    },
    "navigation": {
        "es": [("llévame {place_es}", "easy"), ("cómo llego {place_es}", "easy")],
        "fr": [("emmène-moi {place_fr}", "easy"), ("c'est par où pour aller {place_fr}", "hard")],
        "de": [("navigiere {place_de}", "easy"), ("wie komme ich {place_de}", "easy")],
    },
    "smart_home_lights": {
        "es": [("apaga las luces {room_es}", "easy"), ("enciende la luz {room_es}", "easy")],
        "fr": [("éteins la lumière {room_fr}", "easy"), ("allume les lumières {room_fr}", "easy")],
        "de": [("mach das licht {room_de} aus", "easy"), ("schalte das licht {room_de} an", "easy")],
    },
    "add_to_shopping_list": {
        "es": [("añade {item_es} a la lista de la compra", "easy")],
        "fr": [("ajoute {item_fr} à la liste de courses", "easy")],
        "de": [("setz {item_de} auf die einkaufsliste", "easy")],
    },
    "cancel": {
        "es": [("cancela eso", "easy"), ("olvídalo", "easy"), ("eh no no cancela el temporizador", "hard")],
        "fr": [("annule ça", "easy"), ("laisse tomber", "easy"), ("euh non attends annule le minuteur",
                                                                  "hard")],
        "de": [("abbrechen", "easy"), ("vergiss es", "easy"), ("äh nein warte brich den timer ab", "hard")],
    },
    "volume_change": {
        "es": [("sube el volumen", "easy"), ("baja el volumen", "easy"),
               ("eh está muy alto bájale un poco", "hard")],
        "fr": [("monte le son", "easy"), ("baisse le volume", "easy"), ("mets le volume à {n}", "easy")],
        "de": [("mach lauter", "easy"), ("mach leiser", "easy"), ("stell die lautstärke auf {n}", "easy")],
    },
}

V_FILLERS = ["uh", "um", "like", "er", "you know", "hmm", "uh so"]
V_EASY_PREFIX = ["", "", "", "", "hey assistant ", "ok ", "hey "]
V_EASY_SUFFIX = ["", "", "", "", " please", " thanks"]
V_QUESTION_START = ("what", "how", "will", "is", "do", "can", "should", "which", "could", "where", "when",
                    "who")

# Neutral, intent-free small talk for the long rambling preambles.
V_RAMBLE = [
    "so i just got back from my sister's place and honestly it was a whole thing",
    "her kids are getting so big now the little one is already reading chapter books",
    "we ended up talking for ages about the renovation they're doing on the back porch",
    "and then my neighbor stopped me on the way in to talk about the fence again",
    "he thinks the posts are leaning onto his side which i don't really see but whatever",
    "i told him we could look at it together at some point over the weekend",
    "anyway i haven't even taken my shoes off yet",
    "the cat has been acting weird all day she keeps sitting by the window staring at nothing",
    "i think there might be a squirrel out there or something",
    "oh and i finally finished that book about the old sailing ship",
    "it was fine i guess the ending kind of dragged on",
    "work was pretty slow today mostly meetings that went nowhere",
    "my manager wants the slides redone by thursday which is fine i guess",
    "i keep meaning to clean out the garage but there's always something else",
    "there's a stack of old magazines in there from like a decade ago",
    "my cousin might be visiting next month but nothing's confirmed yet",
    "we were trying to figure out where everyone would sleep",
    "the spare room still has all the stuff from the move in it",
    "i should probably donate half of it honestly",
    "i made a really good stew with the leftover vegetables the other night",
    "i repotted the basil and it's doing way better now",
    "i was thinking about taking a pottery class this fall",
    "my friend did one and made these lopsided little bowls that i kind of love",
    "okay i'm rambling a bit sorry",
    "it's been one of those days where everything takes twice as long",
    "i spent forever looking for my keys and they were in my coat pocket the whole time",
    "and the dishwasher is making that clicking noise again",
    "apparently it's just a loose part but still it's annoying",
    "my brother says i should just get a new one but i don't know",
    "oh and the dog next door figured out how to open their gate so that's fun",
    "he wandered over and sat on our porch like he owned the place",
    "we gave him a biscuit and walked him back",
    "i really need to get more sleep this week",
    "i've been staying up way too late watching baking competitions",
    "there's one where they have to bake everything in a tent in a field",
    "and my mother in law sent over another box of old photos for us to sort through",
    "half of them are of people nobody can identify anymore",
    "i was going to start a little vegetable patch but the soil out back is mostly clay",
    "somebody at work brought in homemade cinnamon rolls and they were gone in minutes",
    "i keep forgetting to return the ladder we borrowed from the people across the street",
]
V_RAMBLE_OPEN = ["ok so", "so um", "hey so", "alright so", "okay so uh"]
V_RAMBLE_CLOSE = ["anyway", "so yeah anyway", "anyway sorry um", "okay anyway here's the thing",
                  "but that's not why i'm talking to you anyway"]


def _disfluent(rng: random.Random, text: str) -> str:
    words = text.split()
    for _ in range(rng.randint(1, 2)):
        words.insert(rng.randrange(0, len(words)), rng.choice(V_FILLERS))
    if rng.random() < 0.35:
        j = rng.randrange(len(words))
        words.insert(j, words[j])
    return " ".join(words)


def _sentence_case(text: str) -> str:
    words = text.split()
    first = words[1] if words[0] in ("hey", "ok", "okay") and len(words) > 1 else words[0]
    end = "?" if first.split("'")[0] in V_QUESTION_START else "."
    return text[0].upper() + text[1:] + end


def _voice_utterance(rng: random.Random, label: str, hard: bool) -> str:
    tmpls = V_TEMPLATES[label]
    if hard:
        if rng.random() < 0.75:
            text = _fill(rng, rng.choice(tmpls["hard"]), V_SLOTS)
            if rng.random() < 0.5:
                text = _disfluent(rng, text)
        else:
            text = _disfluent(rng, _fill(rng, rng.choice(tmpls["easy"]), V_SLOTS))
    else:
        text = _fill(rng, rng.choice(tmpls["easy"]), V_SLOTS)
        text = rng.choice(V_EASY_PREFIX) + text
        suffix = rng.choice(V_EASY_SUFFIX)
        if not text.endswith("please") and label != "medical_emergency":
            text += suffix
    if rng.random() < 0.2:
        text = _sentence_case(text)
    return text


def _voice_preamble(rng: random.Random) -> str:
    pool = list(V_RAMBLE)
    rng.shuffle(pool)
    parts = [rng.choice(V_RAMBLE_OPEN)]
    while _word_count(" ".join(parts)) < 310:
        parts.append(pool.pop())
    parts.append(rng.choice(V_RAMBLE_CLOSE))
    return " ".join(parts)


# Worked examples before each utterance (few-shot). A 135M model scores near 0 % zero-shot on
# 13 intents and ~45 % with these, which leaves room for compression damage to show. The order is
# fixed and mixed (the last demo biases small models), and no demo text appears in the set.
_DEMO_PAIRS = (
    ("my dad collapsed and isn't breathing", "medical_emergency"),
    ("turn off the kitchen lights", "smart_home_lights"),
    ("take me to the airport", "navigation"),
    ("there's a charge on my card i didn't make", "report_fraud"),
    ("add eggs to my shopping list", "add_to_shopping_list"),
    ("call mom", "call_contact"),
    ("turn the volume up", "volume_change"),
    ("how much money is in my checking account", "check_balance"),
    ("is it going to rain tomorrow", "weather_query"),
    ("cancel that", "cancel"),
    ("text john i'm running late", "send_message"),
    ("play some jazz", "play_music"),
    ("set a timer for ten minutes", "set_timer"),
)
VOICE_DEMOS = tuple(
    msg for utterance, label in _DEMO_PAIRS
    for msg in ({"role": "user", "content": utterance}, {"role": "assistant", "content": label})
)


def build_voice(seed: int = VOICE_SEED) -> list[dict]:
    rng = random.Random(seed)
    labels = [label for label in VOICE_LABEL_NAMES for _ in range(VOICE_COUNTS[label])]
    assert len(labels) == N_ITEMS
    rng.shuffle(labels)
    idx = list(range(N_ITEMS))
    ml = set(rng.sample([i for i in idx if labels[i] in V_ML_TEMPLATES], VOICE_N_MULTILINGUAL))
    long_ = set(rng.sample([i for i in idx if i not in ml and labels[i] != "medical_emergency"],
                           VOICE_N_LONG))
    langs = ["es", "fr", "de"]
    seen: set[str] = set()
    items = []
    ml_count = 0
    for i in idx:
        label = labels[i]
        tags: list[str] = []
        for _attempt in range(200):
            if i in ml:
                per_lang = V_ML_TEMPLATES[label]
                lang = langs[(ml_count + _attempt) % 3]
                tmpl, difficulty = rng.choice(per_lang[lang])
                text = _fill(rng, tmpl, V_ML_SLOTS)
            else:
                difficulty = "hard" if rng.random() < VOICE_HARD_RATE else "easy"
                text = _voice_utterance(rng, label, difficulty == "hard")
            if text.lower() not in seen:
                break
        else:  # pragma: no cover - vocabulary too small
            raise RuntimeError(f"could not find a unique utterance for {label}")
        seen.add(text.lower())
        tags.append(difficulty)
        if i in ml:
            ml_count += 1
            tags.append("multilingual")
        if i in long_:
            text = f"{_voice_preamble(rng)} {text}"
            tags.append("long_context")
        else:
            tags.append("short_context")
        if label in VOICE_RARE:
            tags.append("rare_label")
        items.append({
            "id": f"voice-{i + 1:04d}",
            "messages": [
                {"role": "system", "content": VOICE_SYSTEM_PROMPT},
                *VOICE_DEMOS,
                {"role": "user", "content": text},
            ],
            "reference": label,
            "slices": _slices("voice", tags),
            "max_tokens": 8,
            "meta": {"labels": list(VOICE_LABEL_NAMES), "task": "intent"},
        })
    return items


# ---------------------------------------------------------------------------
# 2. Extraction: business documents -> strict JSON (invoice schema)
# ---------------------------------------------------------------------------

CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF", "CAD"]
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"

INVOICE_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "invoice.schema.json",
    "title": "Invoice",
    "type": "object",
    "properties": {
        "vendor": {"type": "string", "minLength": 1,
                   "description": "Company that issued the invoice (the seller), as written in the document"},
        "invoice_number": {"type": "string", "minLength": 1,
                           "description": "Invoice number exactly as written"},
        "date": {"type": "string", "format": "date", "pattern": DATE_PATTERN,
                 "description": "Invoice issue date, YYYY-MM-DD"},
        "total": {"type": "number",
                  "description": "Final amount payable on the invoice including tax, as a plain number"},
        "currency": {"type": "string", "enum": CURRENCIES, "description": "ISO 4217 currency code"},
        "due_date": {"type": ["string", "null"], "format": "date", "pattern": DATE_PATTERN,
                     "description": "Payment due date, YYYY-MM-DD, or null if the document gives none"},
        "po_number": {"type": ["string", "null"], "minLength": 1,
                      "description": "Buyer's purchase order number exactly as written, or null if absent"},
    },
    "required": ["vendor", "invoice_number", "date", "total", "currency", "due_date", "po_number"],
    "additionalProperties": False,
}
SCHEMA_FILE = "schemas/invoice.schema.json"

EXTRACTION_SYSTEM_PROMPT = (
    "Extract the fields as a single JSON object matching this schema; output only JSON, no prose, "
    "no code fences; use null when a field is not present in the document.\n\nSchema: "
    + json.dumps(INVOICE_SCHEMA, ensure_ascii=False, separators=(",", ":"))
)

EX_N_MULTILINGUAL = 24
EX_N_LONG = 30
EX_N_MISSING = 48
EX_HARD_RATE = 0.5

EN_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
             "November", "December"]
DE_MONTHS = ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
             "November", "Dezember"]
FR_MONTHS = ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
             "novembre", "décembre"]
ES_MONTHS = ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre",
             "octubre",
             "noviembre", "diciembre"]
EN_WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]

DATE_STYLES = ("iso", "us_long", "uk_long", "us_abbr", "uk_abbr", "us_slash", "eu_slash", "de_dot", "de_long",
               "fr_long", "es_long")
SLASH_LABEL = {"en": {"us_slash": "MM/DD/YYYY", "eu_slash": "DD/MM/YYYY"},
               "fr": {"eu_slash": "JJ/MM/AAAA"}, "es": {"eu_slash": "DD/MM/AAAA"}, "de": {}}


def _fmt_date(d: dt.date, style: str) -> str:
    m = d.month - 1
    if style == "iso":
        return d.isoformat()
    if style == "us_long":
        return f"{EN_MONTHS[m]} {d.day}, {d.year}"
    if style == "uk_long":
        return f"{d.day} {EN_MONTHS[m]} {d.year}"
    if style == "us_abbr":
        return f"{EN_MONTHS[m][:3]} {d.day}, {d.year}"
    if style == "uk_abbr":
        return f"{d.day} {EN_MONTHS[m][:3]} {d.year}"
    if style == "us_slash":
        return f"{d.month:02d}/{d.day:02d}/{d.year}"
    if style == "eu_slash":
        return f"{d.day:02d}/{d.month:02d}/{d.year}"
    if style == "de_dot":
        return f"{d.day:02d}.{d.month:02d}.{d.year}"
    if style == "de_long":
        return f"{d.day}. {DE_MONTHS[m]} {d.year}"
    if style == "fr_long":
        return f"{'1er' if d.day == 1 else d.day} {FR_MONTHS[m]} {d.year}"
    if style == "es_long":
        return f"{d.day} de {ES_MONTHS[m]} de {d.year}"
    raise ValueError(style)


def _fmt_num(amount: Decimal, style: str, decimals: int) -> str:
    s = f"{amount:,.{decimals}f}"
    if style == "en":
        return s
    if style == "de":
        return s.replace(",", "_").replace(".", ",").replace("_", ".")
    if style == "fr":
        return s.replace(",", " ").replace(".", ",")
    if style == "ch":
        return s.replace(",", "'")
    raise ValueError(style)


NUM_STYLES = ("en", "de", "fr", "ch")
CURRENCY_MARKS = {"USD": ("$", "USD"), "EUR": ("€", "EUR"), "GBP": ("£", "GBP"), "JPY": ("¥", "JPY"),
                  "CHF": ("CHF",), "CAD": ("C$", "CAD")}

# (number style, pattern) ; pattern uses {n} for the formatted number
MONEY_FORMATS: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("en", "USD"): [("en", "${n}"), ("en", "USD {n}"), ("en", "{n} USD"), ("en", "US${n}")],
    ("en", "EUR"): [("en", "€{n}"), ("en", "EUR {n}"), ("en", "{n} EUR")],
    ("en", "GBP"): [("en", "£{n}"), ("en", "GBP {n}")],
    ("en", "JPY"): [("en", "¥{n}"), ("en", "JPY {n}"), ("en", "{n} JPY")],
    ("en", "CHF"): [("en", "CHF {n}"), ("ch", "CHF {n}")],
    ("en", "CAD"): [("en", "C${n}"), ("en", "CAD {n}")],
    ("de", "EUR"): [("de", "{n} €"), ("de", "{n} EUR"), ("de", "EUR {n}")],
    ("de", "CHF"): [("ch", "CHF {n}"), ("ch", "{n} CHF")],
    ("fr", "EUR"): [("fr", "{n} €"), ("fr", "{n} EUR")],
    ("fr", "CHF"): [("ch", "CHF {n}"), ("fr", "{n} CHF")],
    ("es", "EUR"): [("de", "{n} €"), ("de", "{n} EUR")],
}
TABLE_NUM_STYLE = {"en": "en", "de": "de", "fr": "fr", "es": "de"}

TAX = {  # (lang, currency) -> (tax name, [rates in percent])
    ("en", "USD"): ("Sales Tax", ["6", "7", "7.25", "8.25", "8.875"]),
    ("en", "EUR"): ("VAT", ["19", "20", "21"]),
    ("en", "GBP"): ("VAT", ["20"]),
    ("en", "JPY"): ("Consumption Tax", ["10"]),
    ("en", "CHF"): ("VAT", ["8.1"]),
    ("en", "CAD"): ("HST", ["13", "15"]),
    ("de", "EUR"): ("MwSt.", ["19"]),
    ("de", "CHF"): ("MWST", ["8.1"]),
    ("fr", "EUR"): ("TVA", ["20"]),
    ("fr", "CHF"): ("TVA", ["8,1"]),
    ("es", "EUR"): ("IVA", ["21"]),
}

EN_COMPANY_A = ["Alderbrook", "Bluefen", "Corvane", "Dunmore", "Elmstead", "Fairhollow", "Greyridge",
                "Hollins & Vey",
                "Ironleaf", "Juniper Ridge", "Kestrel Point", "Larkmoor", "Marrowby", "Northwind Vale",
                "Oakhurst",
                "Pellham", "Quarry Lane", "Redmere", "Silverbirch", "Thornbury", "Upland Crest", "Westcombe",
                "Yarrowfield", "Zephyr Bay", "Brackenwood", "Caldermoor"]
EN_COMPANY_B = ["Packaging", "Industrial Supply", "Office Solutions", "Logistics", "Textiles", "Fasteners",
                "Print "
                "Works", "Lab Supplies", "Catering", "Electrical", "Software Services",
                "Facilities Management",
                "Coffee Roasters", "Freight", "Hardware", "Safety Products", "Data Systems", "Workwear"]
EN_COMPANY_C = ["Inc.", "LLC", "Ltd", "Ltd.", "Co.", "Corp.", "", "Group", "Limited"]
DE_COMPANY_A = ["Kessler", "Brandt", "Hohenau", "Lindqvist", "Weißbach", "Falkenried", "Sonnleitner",
                "Achental",
                "Mühlberg", "Rosenthaler", "Eckhardt", "Tannwald"]
DE_COMPANY_B = ["Feinmechanik", "Verpackungen", "Bürobedarf", "Logistik", "Elektrotechnik", "Druckerei",
                "Laborbedarf", "Metallbau", "Gebäudeservice"]
DE_COMPANY_C = ["GmbH", "AG", "GmbH & Co. KG", "e.K."]
FR_COMPANY_A = ["Emballages", "Fournitures", "Imprimerie", "Transports", "Électricité", "Informatique",
                "Nettoyage", "Mécanique"]
FR_COMPANY_B = ["Durand", "Lefèvre", "Clairval", "Morvan", "Besnard", "Roche-Ardent", "Valmont", "Chassagne",
                "Beaulieu", "Perrichon"]
FR_COMPANY_C = ["SARL", "SAS", "SA"]
ES_COMPANY_A = ["Suministros", "Distribuciones", "Talleres", "Imprenta", "Transportes", "Papelería",
                "Limpiezas"]
ES_COMPANY_B = ["Olivar", "Montecierzo", "Alvarado", "Sierra Clara", "Riberal", "Castellví", "Peñascal",
                "Urdaneta"]
ES_COMPANY_C = ["S.L.", "S.A.", "S.L.U."]

FIRST_NAMES = {
    "en": ["Dana", "Marcus", "Priya", "Owen", "Leah", "Tobias", "Grace", "Samir", "Hannah", "Victor", "Imani",
           "Colin"],
    "de": ["Jana", "Markus", "Sabine", "Tobias", "Katrin", "Florian", "Heike", "Jens"],
    "fr": ["Claire", "Julien", "Amélie", "Thomas", "Élodie", "Nicolas", "Margaux", "Hugo"],
    "es": ["Lucía", "Javier", "Marta", "Diego", "Carmen", "Andrés", "Elena", "Pablo"],
}
LAST_NAMES = {
    "en": ["Whitaker", "Okoro", "Lindgren", "Castillo", "Moreau", "Hadley", "Nakamura", "Brennan", "Adeyemi",
           "Fox"],
    "de": ["Schubert", "Krämer", "Vogt", "Hartmann", "Lorenz", "Brandl"],
    "fr": ["Garnier", "Roux", "Fontaine", "Mercier", "Chevalier", "Lemoine"],
    "es": ["Navarro", "Romero", "Iglesias", "Serrano", "Molina", "Vidal"],
}
EN_STREETS = ["Harbor Road", "Mill Lane", "Station Street", "Quarry Avenue", "Oak Drive", "Commerce Way",
              "Riverside Parkway", "Bell Street", "Kingsway", "Foundry Row"]
EN_CITIES = ["Springfield, IL 62704", "Dayton, OH 45402", "Leeds LS1 4AP", "Bristol BS1 5TR",
             "Tacoma, WA 98402",
             "Raleigh, NC 27601", "Manchester M2 3HF", "Hamilton, ON L8P 4R5", "Osaka 530-0001", "Basel 4051",
             "Madison, WI 53703", "Cork T12 X2RK"]
DE_STREETS = ["Lindenstraße", "Industriestraße", "Am Hafen", "Bahnhofstraße", "Gewerbering", "Mühlenweg"]
DE_CITIES = ["80331 München", "20095 Hamburg", "70173 Stuttgart", "04109 Leipzig", "8001 Zürich",
             "50667 Köln"]
FR_STREETS = ["rue des Tanneurs", "avenue de la Gare", "boulevard Carnot", "rue du Commerce",
              "chemin des Vignes"]
FR_CITIES = ["69002 Lyon", "33000 Bordeaux", "44000 Nantes", "1204 Genève", "59000 Lille", "31000 Toulouse"]
ES_STREETS = ["Calle Mayor", "Avenida del Puerto", "Calle de la Industria", "Paseo de la Estación",
              "Calle Real"]
ES_CITIES = ["28013 Madrid", "46002 Valencia", "41001 Sevilla", "48001 Bilbao", "50001 Zaragoza"]

EN_ITEMS = ["A4 copy paper, 80gsm (box of 5 reams)", "Corrugated shipping boxes 40x30x30",
            "Stainless hex bolts "
            "M8x40 (pack of 100)", "On-site network maintenance (hours)", "Nitrile gloves, size M (case)",
            "Espresso beans, 1 kg bag", "Pallet wrap film 500mm", "Printer toner cartridge, black",
            "Consulting services (monthly retainer)", "LED panel 600x600", "Cable ties 300mm (bag of 500)",
            "Office chair, mesh back", "Pipette tips 200ul (rack)", "Freight handling", "Software license "
            "renewal (annual seat)", "Cleaning services (monthly)", "Safety goggles, anti-fog",
            "Label printer rolls "
            "100x150", "Catering - team lunch (per person)", "Copper wire 2.5mm2 (100 m roll)",
            "Hi-vis vests (pack of 10)", "Desk lamp, adjustable"]
DE_ITEMS = ["Kopierpapier A4, 80 g/m² (Karton)", "Versandkartons 40x30x30 cm",
            "Sechskantschrauben M8x40 (100 Stück)",
            "Wartung Netzwerk vor Ort (Std.)", "Nitrilhandschuhe Gr. M (Karton)", "Tonerkartusche schwarz",
            "Palettenstretchfolie 500 mm", "Reinigungsdienst (monatlich)", "Kabelbinder 300 mm (500 Stück)"]
FR_ITEMS = ["Papier A4 80 g (carton de 5 ramettes)", "Cartons d'expédition 40x30x30", "Vis hexagonales M8x40 "
            "(boîte de 100)", "Maintenance réseau sur site (heure)", "Gants nitrile taille M (carton)",
            "Cartouche de toner noir", "Film étirable 500 mm", "Prestation de nettoyage (mensuelle)",
            "Colliers de serrage 300 mm (sachet de 500)"]
ES_ITEMS = ["Papel A4 80 g (caja de 5 paquetes)", "Cajas de envío 40x30x30",
            "Tornillos hexagonales M8x40 (100 uds.)",
            "Mantenimiento de red in situ "
            "(hora)", "Guantes de nitrilo talla M (caja)", "Cartucho de tóner negro",
            "Film estirable 500 mm", "Servicio de limpieza (mensual)", "Bridas de 300 mm (bolsa de 500)"]
ITEMS = {"en": EN_ITEMS, "de": DE_ITEMS, "fr": FR_ITEMS, "es": ES_ITEMS}

CARRIERS = ["Ridgeway Express", "BlueLine Parcel", "Northstar Freight", "Cobalt Courier"]

# Boilerplate for long documents (written for this file).  {vendor} is filled in.
BOILERPLATE = [
    "Terms and conditions. All goods remain the property of {vendor} until payment has been received in "
    "full. Claims for shortages or damage must be reported in writing within five business days of delivery, "
    "accompanied by photographs and the delivery reference. Goods returned without prior authorisation will "
    "not be accepted. Restocking charges may apply to returns of non-defective goods, and custom or "
    "made-to-order items cannot be returned under any circumstances.",
    "Late payment. Overdue balances may incur interest at the rate permitted by applicable law, calculated "
    "daily until the date of payment. We reserve the right to suspend further deliveries on accounts that "
    "remain overdue. Any costs of collection, including reasonable legal fees, will be charged to the "
    "customer. If you believe an amount on this document is incorrect, please contact our accounts team "
    "before paying so that the matter can be resolved promptly.",
    "Remittance instructions. Please pay by bank transfer to the account shown on your customer statement "
    "and quote the invoice number as the payment reference so that your payment can be matched "
    "automatically. Payments without a reference may take several days to allocate. We do not accept cheques "
    "for international accounts. Bank charges levied by the sending bank are the responsibility of the "
    "payer; please make sure the full amount reaches our account.",
    "CONFIDENTIALITY NOTICE: This message and any attachments are intended solely for the named recipient "
    "and may contain confidential or legally privileged information. If you have received this message in "
    "error, please notify the sender immediately by replying to this email and delete it from your system. "
    "Any unauthorised review, use, disclosure or distribution is prohibited. Although we scan outgoing mail "
    "for viruses, we accept no liability for any damage caused by this message or its attachments.",
    "Please consider the environment before printing this email. {vendor} has committed to reducing "
    "packaging waste across all of its operations. Wherever possible, our shipments use recycled cartons and "
    "paper-based void fill, and we are happy to collect reusable pallets on our next delivery to your site. "
    "If you would like to join our pallet return programme, reply to this message and our logistics "
    "coordinator will arrange a collection slot.",
    "Data protection. We process the personal data of our customers' contact persons only for the purposes "
    "of order handling, invoicing and customer service. Data is stored for as long as required by statutory "
    "retention rules and is not shared with third parties except where necessary to deliver goods or "
    "services, for example with carriers or payment providers. You can request access to or correction of "
    "your data at any time by writing to our data protection officer.",
    "Warranty. Unless stated otherwise in a separate agreement, products supplied by {vendor} are covered by "
    "a limited warranty against defects in materials and workmanship for twelve months from delivery. The "
    "warranty does not cover wear and tear, misuse, improper installation, or modifications made without our "
    "written consent. Our liability under this warranty is limited to repair or replacement of the affected "
    "goods or, at our option, a refund of the price paid.",
    "Customer portal. You can view open items, download copies of past statements and update your billing "
    "contacts through our online customer portal. If you have not yet activated your account, use the "
    "registration link sent to your accounts payable mailbox. For security reasons, we will never ask you to "
    "change our bank details by email. If you receive such a request, please call your account manager "
    "before making any payment.",
    "Office hours. Our accounts team is available Monday to Friday during normal business hours. During "
    "public holidays and the end-of-year shutdown, responses to billing queries may be delayed by a few "
    "business days. Orders placed during this period will be processed in the order in which they were "
    "received once the office reopens. We thank you for your patience and wish you a productive season.",
    "Delivery and risk. Delivery dates given in quotations and order confirmations are estimates only. Risk "
    "in the goods passes to the customer upon delivery to the agreed address, or upon collection where the "
    "customer arranges its own transport. Partial deliveries are permitted and may be invoiced separately. "
    "If delivery is delayed at the customer's request, we may charge reasonable storage costs for the period "
    "of the delay.",
    "Tax information. Prices quoted are exclusive of applicable taxes unless stated otherwise. Where goods "
    "are supplied to a business customer in another country, the reverse-charge mechanism may apply and the "
    "customer is responsible for accounting for tax in its own jurisdiction. Please make sure that the tax "
    "identification number we hold for your organisation is current, as incorrect details may delay the "
    "processing of credit notes.",
    "Quality assurance. Every batch shipped by {vendor} is inspected before dispatch and a certificate of "
    "conformity is available on request. If a product does not meet the agreed specification, please "
    "quarantine the affected goods, keep the original packaging and labels, and contact our quality team "
    "with the batch code. We will investigate the issue and, where appropriate, arrange for replacement "
    "goods to be sent at no additional cost.",
    "Customer survey. We are always looking to improve our service. In the coming weeks you may receive a "
    "short survey about your experience with our ordering, delivery and invoicing processes. The survey "
    "takes about five minutes to complete and all responses are treated confidentially. As a thank-you, "
    "participants can choose a donation to one of several local charities supported by our staff.",
    "Force majeure. Neither party shall be liable for any failure or delay in performing its obligations "
    "where such failure or delay results from events beyond its reasonable control, including natural "
    "disasters, industrial action, epidemics, acts of government, or failures of public utilities and "
    "transport networks. The affected party shall notify the other party without undue delay and use "
    "reasonable efforts to limit the effect of the event on its performance.",
    "Governing law. These terms are governed by the laws of the jurisdiction in which {vendor} has its "
    "registered office, and the courts of that jurisdiction have exclusive jurisdiction over any dispute "
    "arising from them. If any provision is found to be invalid or unenforceable, the remaining provisions "
    "shall continue in full force. No waiver of any right shall be effective unless given in writing by an "
    "authorised representative.",
    "Returns. To return goods, request a return authorisation through your account manager and include the "
    "authorisation code on the outside of every carton. Returned goods must be unused, in their original "
    "packaging and accompanied by a copy of the delivery note. Credit for accepted returns is issued as a "
    "credit note against your account and can be offset against future purchases; cash refunds are only made "
    "where an account is closed.",
    "Changes to your account. Please let us know in writing if your company name, registered address, "
    "billing contact or tax details change. Invoices are issued to the details held on file at the time of "
    "dispatch, and re-issuing documents because of outdated information may delay payment processing on both "
    "sides. Changes take effect from the next business day after we confirm them.",
    "Installation and services. Where an order includes installation, commissioning or training, our "
    "technicians will agree an appointment with your site contact. Please make sure that the work area is "
    "accessible, that power and network connections are available, and that a responsible person is present "
    "to sign the service report. Waiting time caused by lack of access may be charged at the standard hourly "
    "rate.",
    "Newsletter. Our quarterly newsletter covers new product lines, changes to lead times and tips for "
    "getting the most out of the products you already use. Subscribers also receive early notice of price "
    "changes and seasonal closures. You can subscribe or unsubscribe at any time from the customer portal or "
    "by replying to any of our emails with the word unsubscribe in the subject line.",
    "-----Original Message-----\nHello, could you please send us the paperwork for the last delivery so that "
    "we can close the order in our system before month end? Our accounts payable team needs a copy in PDF or "
    "plain text. Also, please check that all reference numbers are shown, otherwise the document may be held "
    "up by our matching workflow. Thanks in advance, and apologies for the short notice.",
]


def _company(rng: random.Random, lang: str) -> str:
    if lang == "en":
        parts = [rng.choice(EN_COMPANY_A), rng.choice(EN_COMPANY_B), rng.choice(EN_COMPANY_C)]
    elif lang == "de":
        parts = [rng.choice(DE_COMPANY_A), rng.choice(DE_COMPANY_B), rng.choice(DE_COMPANY_C)]
    elif lang == "fr":
        parts = [rng.choice(FR_COMPANY_A), rng.choice(FR_COMPANY_B), rng.choice(FR_COMPANY_C)]
    else:
        parts = [rng.choice(ES_COMPANY_A), rng.choice(ES_COMPANY_B), rng.choice(ES_COMPANY_C)]
    return " ".join(p for p in parts if p)


def _ascii(text: str) -> str:
    table = str.maketrans({"é": "e", "è": "e", "á": "a", "í": "i", "ó": "o", "ú": "u", "ñ": "n", "ç": "c",
                           "É": "E", "ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ü": "Ue", "Ö": "Oe",
                           "Ä": "Ae"})
    return text.translate(table)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z]", "", _ascii(name.split()[0]).lower()) or "co"


def _address(rng: random.Random, lang: str) -> tuple[str, str]:
    n = rng.randint(2, 480)
    if lang == "en":
        return f"{n} {rng.choice(EN_STREETS)}", rng.choice(EN_CITIES)
    if lang == "de":
        return f"{rng.choice(DE_STREETS)} {n % 90 + 1}", rng.choice(DE_CITIES)
    if lang == "fr":
        return f"{n % 90 + 1} {rng.choice(FR_STREETS)}", rng.choice(FR_CITIES)
    return f"{rng.choice(ES_STREETS)} {n % 90 + 1}", rng.choice(ES_CITIES)


def _invoice_number(rng: random.Random, lang: str, year: int) -> str:
    n = rng.randint(10, 99999)
    options = {
        "en": [f"INV-{year}-{n:05d}", f"A{n:06d}", f"INV{n:07d}", f"{year}/{n % 10000:04d}", f"SI-{n}",
               f"{rng.choice('BCDK')}{n:05d}-{rng.randint(1, 9)}"],
        "de": [f"RE-{year}-{n % 10000:04d}", f"R{n:06d}", f"{year}-{n:05d}"],
        "fr": [f"FAC-{year}-{n % 10000:04d}", f"F{year}{n:05d}", f"FA{n:06d}"],
        "es": [f"FV-{year}/{n % 10000:04d}", f"A-{n:05d}", f"{year}-F{n:05d}"],
    }[lang]
    return rng.choice(options)


def _po_number(rng: random.Random, lang: str, year: int) -> str:
    n = rng.randint(100, 99999)
    options = {
        "en": [f"PO-{n:05d}", f"45{rng.randint(0, 99999999):08d}", f"PO{year}-{n % 10000:04d}", f"P-{n}"],
        "de": [f"BST-{n:05d}", f"45{rng.randint(0, 99999999):08d}", f"B{year}-{n % 1000:03d}"],
        "fr": [f"BC-{year}-{n % 10000:04d}", f"CMD{n:06d}"],
        "es": [f"PED-{n:05d}", f"OC-{year}-{n % 10000:04d}"],
    }[lang]
    return rng.choice(options)


def _money_value(total: Decimal, currency: str) -> float | int:
    return int(total) if currency == "JPY" else float(total)


class _Doc:
    """All facts of one synthetic document plus its rendering helpers."""

    def __init__(self, rng: random.Random, lang: str, hard: bool, long_: bool, missing: tuple[str, ...]):
        self.rng, self.lang, self.hard, self.long = rng, lang, hard, long_
        self.vendor = _company(rng, lang)
        self.buyer = _company(rng, lang)
        while set(self.buyer.split()[:2]) & set(self.vendor.split()[:2]):
            self.buyer = _company(rng, lang)
        self.vendor_addr = _address(rng, lang)
        self.buyer_addr = _address(rng, lang)
        self.date = dt.date(2024, 1, 2) + dt.timedelta(days=rng.randint(0, 700))
        terms = rng.choice([10, 14, 15, 21, 30, 45, 60])
        self.due = None if "due_date" in missing else self.date + dt.timedelta(days=terms)
        self.inv = _invoice_number(rng, lang, self.date.year)
        self.po = None if "po_number" in missing else _po_number(rng, lang, self.date.year)
        if lang == "en":
            self.currency = rng.choice(["USD"] * 4 + ["EUR", "GBP", "GBP", "JPY", "CHF", "CAD"])
        elif lang in ("de", "fr"):
            self.currency = rng.choice(["EUR", "EUR", "EUR", "CHF"])
        else:
            self.currency = "EUR"
        self.decimals = 0 if self.currency == "JPY" else 2
        quant = Decimal(1) if self.decimals == 0 else Decimal("0.01")
        # line items
        n_items = rng.randint(2, 6) if hard else rng.randint(1, 3)
        descs = rng.sample(ITEMS[lang], n_items)
        self.items = []
        for desc in descs:
            qty = rng.choice([1, 1, 2, 3, 4, 5, 6, 10, 12, 20, 25, 40])
            if self.currency == "JPY":
                unit = Decimal(rng.randint(3, 4000) * 10)
            else:
                unit = Decimal(rng.randint(150, 180000)) / 100
                if qty >= 10:
                    unit = (unit / 20).quantize(quant)
            self.items.append((desc, qty, unit, (qty * unit).quantize(quant)))
        self.subtotal = sum((it[3] for it in self.items), Decimal(0))
        self.discount = self.shipping = self.tax = Decimal(0)
        self.tax_name, rates = TAX[(lang, self.currency)]
        self.tax_rate = rng.choice(rates)
        if hard:
            if rng.random() < 0.3:
                self.discount_pct = rng.choice([5, 10, 15])
                self.discount = (self.subtotal * self.discount_pct / 100).quantize(quant, ROUND_HALF_UP)
            if rng.random() < 0.6:
                self.shipping = (Decimal(rng.randint(500, 9500)) / 100 if self.decimals else
                                 Decimal(rng.randint(5, 300) * 10))
            rate = Decimal(self.tax_rate.replace(",", "."))
            self.tax = ((self.subtotal - self.discount) * rate / 100).quantize(quant, ROUND_HALF_UP)
        self.total = self.subtotal - self.discount + self.shipping + self.tax
        # rendering choices, fixed per document
        nstyle, self.money_pattern = rng.choice(MONEY_FORMATS[(lang, self.currency)])
        self.money_style = nstyle
        self.table_style = "ch" if (self.currency == "CHF" and lang != "en") else TABLE_NUM_STYLE[lang]
        self.first = rng.choice(FIRST_NAMES[lang])
        self.last = rng.choice(LAST_NAMES[lang])
        self.buyer_first = rng.choice([n for n in FIRST_NAMES[lang] if n != self.first])
        self.buyer_last = rng.choice([n for n in LAST_NAMES[lang] if n != self.last])

    # -- rendering helpers -------------------------------------------------
    def money(self, amount: Decimal) -> str:
        s = self.money_pattern.replace("{n}", _fmt_num(abs(amount), self.money_style, self.decimals))
        return ("-" + s) if amount < 0 else s

    def num(self, amount: Decimal) -> str:
        return _fmt_num(amount, self.table_style, self.decimals)

    def table(self, headers: tuple[str, str, str, str]) -> list[str]:
        rows = [headers] + [(d, str(q), self.num(u), self.num(t)) for d, q, u, t in self.items]
        w = [max(len(r[i]) for r in rows) for i in range(4)]
        out = []
        for k, r in enumerate(rows):
            cells = [r[0].ljust(w[0])] + [r[c].rjust(w[c]) for c in (1, 2, 3)]
            out.append("  ".join(cells).rstrip())
            if k == 0:
                out.append("-" * (sum(w) + 6))
        return out

    def other_date(self, lo: int, hi: int) -> dt.date:
        return self.date + dt.timedelta(days=self.rng.randint(lo, hi))

    def reference(self) -> dict:
        return {
            "vendor": self.vendor,
            "invoice_number": self.inv,
            "date": self.date.isoformat(),
            "total": _money_value(self.total, self.currency),
            "currency": self.currency,
            "due_date": self.due.isoformat() if self.due else None,
            "po_number": self.po,
        }


def _sentence(text: str) -> str:
    """End a sentence with one full stop even when it ends in an abbreviation like 'Inc.'."""
    return text if text.endswith(".") else text + "."


def _labelled(pairs: list[tuple[str, str]], sep: str = ":") -> list[str]:
    width = max(len(k) for k, _ in pairs) + len(sep) + 1
    return [f"{k}{sep}".ljust(width) + v for k, v in pairs]


def _date_style_en(rng: random.Random, hard: bool, allow_slash: bool) -> str:
    if not hard:
        return "iso"
    styles = ["us_long", "uk_long", "us_abbr", "uk_abbr"] + (["us_slash", "eu_slash"] if allow_slash else [])
    return rng.choice(styles)


def _summary_en(d: _Doc, total_label: str) -> list[str]:
    pairs = []
    if d.hard:
        pairs.append(("Subtotal", d.money(d.subtotal)))
        if d.discount:
            pairs.append((f"Discount ({d.discount_pct}%)", d.money(-d.discount)))
        if d.shipping:
            pairs.append(("Shipping & handling", d.money(d.shipping)))
        pairs.append((f"{d.tax_name} ({d.tax_rate}%)", d.money(d.tax)))
    pairs.append((total_label, d.money(d.total)))
    return _labelled(pairs)


def _doc_en_invoice(d: _Doc) -> str:
    rng = d.rng
    style = _date_style_en(rng, d.hard, allow_slash=True)
    fmt = SLASH_LABEL["en"].get(style)
    suffix = f" ({fmt})" if fmt else ""
    lines = [d.vendor, d.vendor_addr[0], d.vendor_addr[1]]
    if d.hard:
        lines.append(f"Phone +1 555 01{rng.randint(10, 99)} {rng.randint(1000, 9999)}  |  Tax ID "
                     f"{rng.randint(10, 99)}-{rng.randint(1000000, 9999999)}")
    lines += ["", rng.choice(["INVOICE", "Invoice", "TAX INVOICE", "SALES INVOICE"]), ""]
    fields = [(rng.choice(["Invoice No.", "Invoice Number", "Invoice #"]), d.inv),
              (f"Invoice Date{suffix}", _fmt_date(d.date, style))]
    if d.due:
        fields.append((rng.choice(["Due Date", "Payment Due"]) + suffix, _fmt_date(d.due, style)))
    if d.po:
        fields.append((rng.choice(["PO Number", "Customer PO", "Purchase Order"]), d.po))
    if d.hard:
        fields.append(("Customer No.", f"C-{rng.randint(10000, 99999)}"))
        fields.append((f"Delivery Date{suffix}", _fmt_date(d.other_date(-6, -1), style)))
        tail = fields[1:]
        rng.shuffle(tail)
        fields = fields[:1] + tail
    lines += _labelled(fields)
    lines += ["", "Bill To:", d.buyer, f"Attn: {d.buyer_first} {d.buyer_last}", d.buyer_addr[0],
              d.buyer_addr[1], ""]
    lines += d.table(("Description", "Qty", "Unit Price", "Amount"))
    lines += [""] + _summary_en(d, rng.choice(["Total Due", "TOTAL", "Amount Due", "Total"]))
    lines += ["", rng.choice(["Thank you for your business!", "We appreciate your prompt payment.",
                              f"Questions? Contact billing@{_slug(d.vendor)}.example"])]
    return "\n".join(lines)


def _email_header_en(d: _Doc, subject: str) -> list[str]:
    rng = d.rng
    sender = f"{_ascii(d.first).lower()}.{_ascii(d.last).lower()}@{_slug(d.vendor)}.example"
    lines = [f"From: {d.first} {d.last} <{sender}>",
             f"To: {d.buyer_first} {d.buyer_last} <ap@{_slug(d.buyer)}.example>"]
    if d.hard:
        sent = d.other_date(1, 5)
        day = f"{EN_WEEKDAYS[sent.weekday()]}, {sent.day} {EN_MONTHS[sent.month - 1][:3]} {sent.year}"
        lines.append(f"Date: {day} "
                     f"{rng.randint(7, 18):02d}:{rng.randint(0, 59):02d}")
    lines.append(f"Subject: {subject}")
    return lines


def _doc_en_email(d: _Doc) -> str:
    rng = d.rng
    style = _date_style_en(rng, d.hard, allow_slash=False)
    subject = f"Invoice {d.inv}" + (f" (your PO {d.po})" if d.po and rng.random() < 0.5 else "")
    lines = _email_header_en(d, subject) + ["", f"{rng.choice(['Hi', 'Hello', 'Dear'])} {d.buyer_first},", ""]
    if not d.hard:
        lines.append(rng.choice(["Please find our invoice below.",
                                 "Here is the invoice for your recent order.",
                                 "As requested, the invoice details are below."]))
        lines.append("")
        pairs = [("Invoice number", d.inv), ("Invoice date", _fmt_date(d.date, style))]
        if d.po:
            pairs.append(("Your PO", d.po))
        pairs.append(("Amount due", d.money(d.total)))
        if d.due:
            pairs.append(("Due date", _fmt_date(d.due, style)))
        lines += _labelled(pairs)
        lines += [""] + d.table(("Item", "Qty", "Unit", "Line total"))
    else:
        sent = [f"Please find below invoice {d.inv}, issued on {_fmt_date(d.date, style)}, for the "
                f"{len(d.items)} line items we delivered"
                + (f" against your purchase order {d.po}." if d.po else ".")]
        parts = [f"the subtotal is {d.money(d.subtotal)}"]
        if d.discount:
            parts.append(f"less your {d.discount_pct}% discount of {d.money(d.discount)}")
        if d.shipping:
            parts.append(f"plus {d.money(d.shipping)} for shipping")
        parts.append(f"plus {d.tax_name} of {d.money(d.tax)}")
        sent.append("To summarise, " + ", ".join(parts)
                    + f", which brings the total payable to {d.money(d.total)}.")
        if d.due:
            sent.append(f"We would appreciate payment by {_fmt_date(d.due, style)}.")
        lines.append(" ".join(sent))
        lines += [""] + d.table(("Item", "Qty", "Unit", "Line total"))
        if rng.random() < 0.5:
            prev = _invoice_number(rng, "en", d.date.year)
            if prev != d.inv:
                lines += ["", f"PS: we received your payment for our earlier invoice {prev} - thank you."]
    lines += ["", rng.choice(["Best regards,", "Kind regards,", "Thanks,"]), f"{d.first} {d.last}",
              f"{rng.choice(['Accounts Receivable', 'Billing', 'Finance'])}, {d.vendor}"]
    return "\n".join(lines)


def _doc_en_shipping(d: _Doc) -> str:
    rng = d.rng
    style = _date_style_en(rng, True, allow_slash=False)
    pairs = [("Shipper", d.vendor), ("Consignee", d.buyer),
             ("Ship date", _fmt_date(d.other_date(-3, -1), style)),
             ("Carrier", rng.choice(CARRIERS)), ("Tracking no.", f"{rng.randint(10**11, 10**12 - 1)}"),
             ("Packages", str(rng.randint(1, 9)))]
    if d.po:
        pairs.insert(2, ("Your order ref.", d.po))
    lines = ["SHIPPING NOTICE", ""] + _labelled(pairs) + ["", "Contents:"]
    lines += d.table(("Item", "Qty", "Unit", "Value"))
    body = (f"The commercial invoice for this shipment, invoice {d.inv} dated {_fmt_date(d.date, style)}, is "
            f"enclosed in carton 1. Goods value {d.money(d.subtotal)}")
    if d.discount:
        body += f", discount {d.money(-d.discount)}"
    if d.shipping:
        body += f", freight {d.money(d.shipping)}"
    body += f", {d.tax_name} {d.money(d.tax)}; invoice total {d.money(d.total)}."
    if d.due:
        body += f" Payment is due by {_fmt_date(d.due, style)}."
    lines += ["", body, "", _sentence(f"Issued by the dispatch team of {d.vendor}")]
    return "\n".join(lines)


def _doc_en_memo(d: _Doc) -> str:
    rng = d.rng
    style = _date_style_en(rng, True, allow_slash=False)
    clerk = f"{rng.choice(FIRST_NAMES['en'])} {rng.choice(LAST_NAMES['en'])}"
    header = [("To", "Accounts Payable"), ("From", f"{clerk}, Purchasing"),
              ("Date", _fmt_date(d.other_date(2, 6), style)), ("Re",
                                                               f"Supplier invoice for approval - {d.vendor}")]
    text = (_sentence(f"Please process the attached invoice from our supplier {d.vendor}")
            + f" Invoice {d.inv} was issued on {_fmt_date(d.date, style)}")
    text += f" and references our purchase order {d.po}." if d.po else "."
    text += (f" It shows a subtotal of {d.money(d.subtotal)}"
             + (f", a discount of {d.money(d.discount)}" if d.discount else "")
             + (f", shipping of {d.money(d.shipping)}" if d.shipping else "")
             + f" and {d.tax_name} of {d.money(d.tax)}, for a total of {d.money(d.total)}.")
    if d.due:
        text += f" Payment is due on {_fmt_date(d.due, style)}."
    text += (f" Cost center {rng.randint(1000, 9999)}; the goods were received in full by {d.buyer} stores. "
             f"Approved by {rng.choice(FIRST_NAMES['en'])} {rng.choice(LAST_NAMES['en'])}.")
    lines = ["INTERNAL MEMO", ""] + _labelled(header) + ["", text, "", "Line items as invoiced:"]
    lines += d.table(("Item", "Qty", "Unit", "Amount"))
    return "\n".join(lines)


# -- German / French / Spanish documents -------------------------------------

ML_WORDS = {
    "de": {"title": "RECHNUNG", "inv": "Rechnungsnummer", "date": "Rechnungsdatum", "due": "Zahlbar bis",
           "po": "Ihre Bestellnummer", "to": "Rechnungsempfänger", "cust": "Kundennummer",
           "head": ("Bezeichnung", "Menge", "Einzelpreis", "Gesamt"), "sub": "Nettobetrag", "disc": "Rabatt",
           "ship": "Versandkosten", "total": "Gesamtbetrag", "thanks": "Vielen Dank für Ihren Auftrag.",
           "delivery": "Lieferdatum"},
    "fr": {"title": "FACTURE", "inv": "Facture n°", "date": "Date de facture", "due": "Date d'échéance",
           "po": "Bon de commande n°", "to": "Client", "cust": "Code client",
           "head": ("Désignation", "Qté", "Prix unitaire", "Montant"), "sub": "Total HT", "disc": "Remise",
           "ship": "Frais de port", "total": "Total TTC",
           "thanks": "Nous vous remercions de votre confiance.",
           "delivery": "Date de livraison"},
    "es": {"title": "FACTURA", "inv": "Número de factura", "date": "Fecha de factura",
           "due": "Fecha de vencimiento",
           "po": "Número de pedido", "to": "Cliente", "cust": "N.º de cliente",
           "head": ("Concepto", "Cant.", "Precio", "Importe"), "sub": "Base imponible", "disc": "Descuento",
           "ship": "Portes", "total": "Total", "thanks": "Gracias por su confianza.",
           "delivery": "Fecha de entrega"},
}


def _ml_date_style(d: _Doc, allow_slash: bool) -> str:
    if d.lang == "de":
        return "de_long" if d.hard else "de_dot"
    long_style = "fr_long" if d.lang == "fr" else "es_long"
    if d.hard:
        return d.rng.choice([long_style, "eu_slash"]) if allow_slash else long_style
    return d.rng.choice(["iso", long_style])


def _doc_ml_invoice(d: _Doc) -> str:
    rng, w = d.rng, ML_WORDS[d.lang]
    style = _ml_date_style(d, allow_slash=True)
    fmt = SLASH_LABEL[d.lang].get(style)
    suffix = f" ({fmt})" if fmt else ""
    sep = " :" if d.lang == "fr" else ":"
    lines = [d.vendor, d.vendor_addr[0], d.vendor_addr[1], "", w["title"], ""]
    fields = [(w["inv"], d.inv), (w["date"] + suffix, _fmt_date(d.date, style))]
    if d.due:
        fields.append((w["due"] + suffix, _fmt_date(d.due, style)))
    if d.po:
        fields.append((w["po"], d.po))
    if d.hard:
        fields.append((w["cust"], f"{rng.randint(10000, 99999)}"))
        fields.append((w["delivery"] + suffix, _fmt_date(d.other_date(-6, -1), style)))
    lines += _labelled(fields, sep)
    lines += ["", f"{w['to']}{sep}", d.buyer, d.buyer_addr[0], d.buyer_addr[1], ""]
    lines += d.table(w["head"])
    pairs = []
    if d.hard:
        pairs.append((w["sub"], d.money(d.subtotal)))
        if d.discount:
            pairs.append((f"{w['disc']} {d.discount_pct} %", d.money(-d.discount)))
        if d.shipping:
            pairs.append((w["ship"], d.money(d.shipping)))
        pairs.append((f"{d.tax_name} {d.tax_rate} %", d.money(d.tax)))
    pairs.append((w["total"], d.money(d.total)))
    lines += [""] + _labelled(pairs, sep) + ["", w["thanks"]]
    return "\n".join(lines)


def _doc_ml_email(d: _Doc) -> str:
    style = _ml_date_style(d, allow_slash=False)
    date_s = _fmt_date(d.date, style)
    due_s = _fmt_date(d.due, style) if d.due else None
    sender = f"{d.first} {d.last}"
    addr = f"{_ascii(d.first).lower()}.{_ascii(d.last).lower()}@{_slug(d.vendor)}.example"
    tax_part = ""
    if d.lang == "de":
        head = [f"Von: {sender} <{addr}>", f"An: buchhaltung@{_slug(d.buyer)}.example",
                f"Betreff: Rechnung {d.inv}"]
        body = ["Sehr geehrte Damen und Herren,", ""]
        if d.hard:
            tax_part = (f" Der Betrag setzt sich aus {d.money(d.subtotal)} netto"
                        + (f" abzüglich {d.money(d.discount)} Rabatt" if d.discount else "")
                        + (f" zuzüglich {d.money(d.shipping)} Versand" if d.shipping else "")
                        + f" und {d.money(d.tax)} {d.tax_name} zusammen.")
        text = f"anbei erhalten Sie unsere Rechnung {d.inv} vom {date_s} über {d.money(d.total)}.{tax_part}"
        if due_s:
            text += f" Bitte überweisen Sie den Betrag bis zum {due_s}."
        if d.po:
            text += f" Ihre Bestellnummer: {d.po}."
        closing = ["Mit freundlichen Grüßen", sender, d.vendor]
    elif d.lang == "fr":
        head = [f"De : {sender} <{addr}>", f"À : comptabilite@{_slug(d.buyer)}.example",
                f"Objet : Facture {d.inv}"]
        body = ["Bonjour,", ""]
        if d.hard:
            tax_part = (f" Ce montant comprend {d.money(d.subtotal)} HT"
                        + (f", une remise de {d.money(d.discount)}" if d.discount else "")
                        + (f", {d.money(d.shipping)} de frais de port" if d.shipping else "")
                        + f" et {d.money(d.tax)} de {d.tax_name}.")
        text = (f"Veuillez trouver ci-dessous notre facture {d.inv} du {date_s} d'un montant total de "
                f"{d.money(d.total)}.{tax_part}")
        if due_s:
            text += f" Le règlement est attendu au plus tard le {due_s}."
        if d.po:
            text += f" Référence de votre bon de commande : {d.po}."
        closing = ["Cordialement,", sender, d.vendor]
    else:
        head = [f"De: {sender} <{addr}>", f"Para: contabilidad@{_slug(d.buyer)}.example",
                f"Asunto: Factura {d.inv}"]
        body = ["Estimados señores:", ""]
        if d.hard:
            tax_part = (f" El importe incluye una base imponible de {d.money(d.subtotal)}"
                        + (f", un descuento de {d.money(d.discount)}" if d.discount else "")
                        + (f", portes de {d.money(d.shipping)}" if d.shipping else "")
                        + f" y {d.money(d.tax)} de {d.tax_name}.")
        text = (f"Les remitimos la factura {d.inv} con fecha {date_s} por un importe total de "
                f"{d.money(d.total)}.{tax_part}")
        if due_s:
            text += f" El pago vence el {due_s}."
        if d.po:
            text += f" Su número de pedido: {d.po}."
        closing = ["Atentamente,", sender, d.vendor]
    lines = head + [""] + body + [text, ""] + d.table(ML_WORDS[d.lang]["head"]) + [""] + closing
    return "\n".join(lines)


def _pad_long(d: _Doc, doc: str) -> str:
    """Wrap a document in realistic boilerplate until it has 1,000+ words."""
    rng = d.rng
    is_email = doc.startswith(("From:", "Von:", "De:"))
    pool = [p.replace("{vendor}", d.vendor) for p in BOILERPLATE]
    rng.shuffle(pool)
    before: list[str] = []
    after: list[str] = []
    total = _word_count(doc)
    while total < 1050:
        p = pool.pop()
        (before if not is_email and rng.random() < 0.3 else after).append(p)
        total += _word_count(p)
    parts = []
    if before:
        parts.append("Note from our accounts team:\n\n" + "\n\n".join(before))
    parts.append(doc)
    if after:
        parts.append("\n\n".join(after))
    return "\n\n".join(parts)


def _date_candidates(d: dt.date) -> list[str]:
    return [_fmt_date(d, s) for s in DATE_STYLES]


def _amount_candidates(value: float | int) -> list[str]:
    amount = Decimal(str(value))
    decimals = 0 if isinstance(value, int) else 2
    return [_fmt_num(amount, s, decimals) for s in NUM_STYLES]


def check_extraction_item(item: dict) -> None:
    """Every non-null reference value must be visible in the document, in some format."""
    doc = item["messages"][1]["content"]
    ref = item["reference"]
    for key in ("vendor", "invoice_number", "po_number"):
        if ref[key] is not None and ref[key] not in doc:
            raise AssertionError(f"{item['id']}: {key} {ref[key]!r} not in document")
    for key in ("date", "due_date"):
        if ref[key] is not None:
            cands = _date_candidates(dt.date.fromisoformat(ref[key]))
            if not any(c in doc for c in cands):
                raise AssertionError(f"{item['id']}: {key} {ref[key]} not in document")
    if not any(c in doc for c in _amount_candidates(ref["total"])):
        raise AssertionError(f"{item['id']}: total {ref['total']} not in document")
    if not any(m in doc for m in CURRENCY_MARKS[ref["currency"]]):
        raise AssertionError(f"{item['id']}: currency {ref['currency']} not in document")


def build_extraction(seed: int = EXTRACTION_SEED) -> list[dict]:
    rng = random.Random(seed)
    idx = list(range(N_ITEMS))
    ml = rng.sample(idx, EX_N_MULTILINGUAL)
    langs = {i: ("de", "fr", "es")[k % 3] for k, i in enumerate(ml)}
    long_ = set(rng.sample([i for i in idx if i not in langs], EX_N_LONG))
    missing_idx = rng.sample(idx, EX_N_MISSING)
    missing = {i: (("due_date",), ("po_number",), ("due_date", "po_number"))[k % 3] for k,
               i in enumerate(missing_idx)}
    items = []
    for i in idx:
        lang = langs.get(i, "en")
        hard = rng.random() < EX_HARD_RATE
        d = _Doc(rng, lang, hard, i in long_, missing.get(i, ()))
        if lang != "en":
            doc = rng.choice([_doc_ml_invoice, _doc_ml_email])(d)
        elif hard:
            doc = rng.choice([_doc_en_invoice, _doc_en_email, _doc_en_shipping, _doc_en_memo])(d)
        else:
            doc = rng.choice([_doc_en_invoice, _doc_en_email])(d)
        if i in long_:
            doc = _pad_long(d, doc)
        tags = ["strict_json", "hard" if hard else "easy"]
        if i in long_:
            tags.append("long_context")
        if lang != "en":
            tags.append("multilingual")
        if i in missing:
            tags.append("missing_field")
        items.append({
            "id": f"extraction-{i + 1:04d}",
            "messages": [
                {"role": "system", "content": EXTRACTION_SYSTEM_PROMPT},
                {"role": "user", "content": doc},
            ],
            "reference": d.reference(),
            "slices": _slices("extraction", tags),
            "max_tokens": 160,
            "meta": {"schema": "invoice.schema.json", "task": "extraction"},
        })
    return items


# ---------------------------------------------------------------------------
# 3. Coding: small Python function tasks with reference + tests
# ---------------------------------------------------------------------------

CODING_SYSTEM_PROMPT = "Reply with only the Python code of the function, no explanation."
CODING_N_LONG = 18

C_WORDS = ["apple", "river", "stone", "echo", "maple", "orbit", "quiet", "lantern", "zebra", "pixel",
           "harbor",
           "violet", "cinder", "mango", "thistle", "level", "radar", "noon", "kayak", "banana", "ocean",
           "tiger",
           "cloud", "copper", "listen", "silent", "enlist", "night", "thing", "stressed", "desserts", "tea",
           "eat"]


def _t(name: str, sig: str, spec: str, code: str, inputs: list[tuple], level: str) -> dict:
    return {"name": name, "sig": sig, "spec": spec, "code": textwrap.dedent(code).strip() + "\n",
            "inputs": inputs, "level": level}


def _rtext(rng: random.Random, lo: int = 2, hi: int = 6) -> str:
    out = []
    for _ in range(rng.randint(lo, hi)):
        w = rng.choice(C_WORDS)
        r = rng.random()
        if r < 0.25:
            w = w.capitalize()
        elif r < 0.35:
            w = w.upper()
        if rng.random() < 0.25:
            w += rng.choice([",", "!", "?", ".", "42", "7", "2024"])
        out.append(w)
    return " ".join(out)


def _rints(rng: random.Random, n_lo: int, n_hi: int, lo: int = -9, hi: int = 30) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(n_lo, n_hi))]


def _f_count(rng: random.Random) -> dict:
    v = rng.randrange(6)
    texts = [(_rtext(rng),) for _ in range(6)]
    if v == 0:
        return _t("count_vowels", "(s: str) -> int",
                  "Return the number of vowels in `s`. The vowels are a, e, i, o and u, in upper or lower "
                  "case; 'y' is not a vowel.", '''
                  def count_vowels(s: str) -> int:
                      return sum(1 for ch in s.lower() if ch in "aeiou")
                  ''', texts + [("",)], "easy")
    if v == 1:
        return _t("count_consonants", "(s: str) -> int",
                  "Return the number of consonants in `s`: ASCII letters (either case) other than a, e, i, o "
                  "and u. 'y' counts as a consonant; digits, spaces and punctuation are not counted.", '''
                  def count_consonants(s: str) -> int:
                      return sum(1 for ch in s.lower() if "a" <= ch <= "z" and ch not in "aeiou")
                  ''', texts, "easy")
    if v == 2:
        return _t("count_digits", "(s: str) -> int",
                  "Return how many characters of `s` are ASCII digits 0-9.", '''
                  def count_digits(s: str) -> int:
                      return sum(1 for ch in s if ch in "0123456789")
                  ''', texts + [("no digits here",), ("2024-06-01",)], "easy")
    if v == 3:
        return _t("count_uppercase", "(s: str) -> int",
                  "Return how many characters of `s` are uppercase ASCII letters A-Z.", '''
                  def count_uppercase(s: str) -> int:
                      return sum(1 for ch in s if "A" <= ch <= "Z")
                  ''', texts, "easy")
    if v == 4:
        spaced = [("  " + t[0].replace(" ", rng.choice(["  ", " ", "\t"]), 2) + " ",) for t in texts]
        return _t("count_words", "(s: str) -> int",
                  "Return the number of words in `s`. Words are separated by runs of whitespace (spaces, "
                  "tabs, newlines); leading and trailing whitespace does not create empty words.", '''
                  def count_words(s: str) -> int:
                      return len(s.split())
                  ''', spaced + [("   ",)], "easy")
    sets = ["aeiou", "xyz!", "0123456789", " ,.", "ABC", "lmn", "rst"]
    return _t("count_chars_in", "(s: str, chars: str) -> int",
              "Return how many characters of `s` occur in the string `chars` (case-sensitive). Every "
              "occurrence in `s` counts; repeated characters in `chars` make no difference.", '''
              def count_chars_in(s: str, chars: str) -> int:
                  allowed = set(chars)
                  return sum(1 for ch in s if ch in allowed)
              ''', [(t[0], rng.choice(sets)) for t in texts] + [("", "abc")], "easy")


def _f_clamp(rng: random.Random) -> dict:
    v = rng.randrange(4)
    cases = []
    for _ in range(6):
        lo = rng.randint(-10, 10)
        hi = lo + rng.randint(0, 20)
        x = rng.choice([lo - rng.randint(1, 9), hi + rng.randint(1, 9), rng.randint(lo, hi), lo, hi])
        cases.append((x, lo, hi))
    if v == 0:
        return _t("clamp", "(x: int, lo: int, hi: int) -> int",
                  "Return `x` limited to the inclusive range [lo, hi]: `lo` if `x < lo`, `hi` if `x > hi`, "
                  "and `x` otherwise. You may assume `lo <= hi`.", '''
                  def clamp(x: int, lo: int, hi: int) -> int:
                      return max(lo, min(x, hi))
                  ''', cases, "easy")
    if v == 1:
        swapped = [(x, hi, lo) if rng.random() < 0.5 else (x, lo, hi) for x, lo, hi in cases]
        return _t("clamp", "(x: int, lo: int, hi: int) -> int",
                  "Return `x` limited to the inclusive range between `lo` and `hi`. The bounds may be given "
                  "in either order: if `lo > hi`, swap them first.", '''
                  def clamp(x: int, lo: int, hi: int) -> int:
                      if lo > hi:
                          lo, hi = hi, lo
                      return max(lo, min(x, hi))
                  ''', swapped, "easy")
    if v == 2:
        lists = [(_rints(rng, 0 if k == 0 else 3, 7, -20, 40), lo, hi) for k, (_, lo, hi) in enumerate(cases)]
        return _t("clamp_all", "(xs: list[int], lo: int, hi: int) -> list[int]",
                  "Return a new list in which every element of `xs` is limited to the inclusive range [lo, "
                  "hi] (values below `lo` become `lo`, values above `hi` become `hi`). Assume `lo <= hi`; do "
                  "not modify `xs`.", '''
                  def clamp_all(xs: list[int], lo: int, hi: int) -> list[int]:
                      return [max(lo, min(x, hi)) for x in xs]
                  ''', lists, "easy")
    fcases = [(x + 0.5, float(lo), hi + 0.25) for x, lo, hi in cases]
    return _t("clamp", "(x: float, lo: float, hi: float) -> float",
              "Return `x` limited to the closed interval [lo, hi]: `lo` if `x < lo`, `hi` if `x > hi`, and "
              "`x` otherwise (return the bound or `x` itself, unchanged). Assume `lo <= hi`.", '''
              def clamp(x: float, lo: float, hi: float) -> float:
                  if x < lo:
                      return lo
                  if x > hi:
                      return hi
                  return x
              ''', fcases, "easy")


def _pal_word(rng: random.Random) -> str:
    w = rng.choice(C_WORDS)[: rng.randint(2, 4)]
    return w + rng.choice(["", rng.choice("abcxyz")]) + w[::-1]


def _f_palindrome(rng: random.Random) -> dict:
    v = rng.randrange(3)
    if v == 0:
        inputs = [(_pal_word(rng),), (rng.choice(C_WORDS),), (_pal_word(rng).capitalize(),), ("",),
                  (_pal_word(rng) + "!",), (rng.choice(["noon", "radar", "level", "kayak"]),)]
        rng.shuffle(inputs)
        return _t("is_palindrome", "(s: str) -> bool",
                  "Return True if `s` reads exactly the same forwards and backwards. The comparison is "
                  "case-sensitive and every character counts (spaces and punctuation included). The empty "
                  "string is a palindrome.", '''
                  def is_palindrome(s: str) -> bool:
                      return s == s[::-1]
                  ''', inputs, "easy")
    if v == 1:
        def messy(s: str) -> str:
            out = []
            for ch in s:
                out.append(ch.upper() if rng.random() < 0.3 else ch)
                if rng.random() < 0.25:
                    out.append(rng.choice([" ", ", ", "-", "'"]))
            return "".join(out)
        inputs = [(messy(_pal_word(rng)),), (messy(rng.choice(C_WORDS)),), (messy(_pal_word(rng)) + "?",),
                  ("A1b, B1a",), (messy(_pal_word(rng) + "9"),), ("",)]
        rng.shuffle(inputs)
        return _t("is_palindrome", "(s: str) -> bool",
                  "Return True if `s` is a palindrome when you ignore case and every character that is not a "
                  "letter or a digit (as decided by `str.isalnum`). A string with no letters or digits "
                  "counts as a palindrome.", '''
                  def is_palindrome(s: str) -> bool:
                      kept = [ch.lower() for ch in s if ch.isalnum()]
                      return kept == kept[::-1]
                  ''', inputs, "easy")
    nums = [rng.choice([121, 1221, 12321, 7, 0, 10, 123, 4554, 90209, 1001, 1000021]) for _ in range(3)]
    inputs = [(n,) for n in nums]
    inputs += [(-rng.choice([121, 11, 5]),), (rng.randint(10, 99999),), (rng.randint(0, 9),)]
    return _t("is_palindrome_number", "(n: int) -> bool",
              "Return True if the decimal digits of the integer `n` read the same forwards and backwards. "
              "Negative numbers are never palindromes (because of the minus sign).", '''
              def is_palindrome_number(n: int) -> bool:
                  if n < 0:
                      return False
                  s = str(n)
                  return s == s[::-1]
              ''', inputs, "easy")


def _f_fizzbuzz(rng: random.Random) -> dict:
    a, b = rng.choice([(3, 5), (2, 3), (3, 7), (4, 6), (2, 5), (5, 7), (3, 4), (2, 7)])
    w1, w2 = rng.choice([("Fizz", "Buzz"), ("Ping", "Pong"), ("Foo", "Bar"), ("Tick", "Tock"), ("Zig", "Zag"),
                         ("Hip", "Hop")])
    name = "fizzbuzz" if (w1, w2) == ("Fizz", "Buzz") else f"{w1.lower()}{w2.lower()}"
    code = f'''
        def {name}(n: int) -> list[str]:
            out = []
            for i in range(1, n + 1):
                word = ""
                if i % {a} == 0:
                    word += "{w1}"
                if i % {b} == 0:
                    word += "{w2}"
                out.append(word or str(i))
            return out
        '''
    inputs = [(n,) for n in rng.sample(range(1, 22), 4)] + [(0,), (rng.randint(22, 30),)]
    return _t(name, "(n: int) -> list[str]",
              f"Return a list with one string for each number from 1 to `n` inclusive: '{w1}' for multiples "
              f"of {a}, '{w2}' for multiples of {b}, '{w1}{w2}' for numbers that are multiples of both, and "
              f"the number itself as a decimal string otherwise. For `n < 1` return an empty "
              f"list.", code, inputs, "easy")


def _f_multiples(rng: random.Random) -> dict:
    v = rng.randrange(3)
    cases = [(rng.randint(0, 120), *sorted(rng.sample(range(2, 10), 2))) for _ in range(6)]
    if v == 0:
        return _t("sum_of_multiples", "(limit: int, a: int, b: int) -> int",
                  "Return the sum of all positive integers strictly less than `limit` that are divisible by "
                  "`a` or by `b`. A number divisible by both is counted once. `a` and `b` are positive; for "
                  "`limit <= 1` the result is 0.", '''
                  def sum_of_multiples(limit: int, a: int, b: int) -> int:
                      return sum(i for i in range(1, limit) if i % a == 0 or i % b == 0)
                  ''', cases + [(1, 3, 5)], "easy")
    if v == 1:
        return _t("sum_of_multiples", "(limit: int, a: int, b: int) -> int",
                  "Return the sum of all positive integers less than or equal to `limit` that are divisible "
                  "by `a` or by `b`, counting numbers divisible by both only once. `a` and `b` are positive; "
                  "for `limit < 1` the result is 0.", '''
                  def sum_of_multiples(limit: int, a: int, b: int) -> int:
                      return sum(i for i in range(1, limit + 1) if i % a == 0 or i % b == 0)
                  ''', [(lim - lim % b, a, b) if k % 2 else (lim, a, b)
                        for k, (lim, a, b) in enumerate(cases)],
                  "easy")
    lists = [(lim, sorted(rng.sample(range(0, 12), rng.randint(0, 3)))) for lim, _, _ in cases]
    return _t("sum_of_multiples", "(limit: int, divisors: list[int]) -> int",
              "Return the sum of all positive integers strictly less than `limit` that are divisible by at "
              "least one number in `divisors`. Each qualifying integer is added once. Zeros in `divisors` "
              "are ignored; with no usable divisor the result is 0.", '''
              def sum_of_multiples(limit: int, divisors: list[int]) -> int:
                  ds = [d for d in divisors if d != 0]
                  return sum(i for i in range(1, limit) if any(i % d == 0 for d in ds))
              ''', lists + [(20, [])], "hard")


def _f_parse_kv(rng: random.Random) -> dict:
    ps = rng.choice([";", ",", "&", "|"])
    kvs = rng.choice(["=", ":"])
    to_int = rng.random() < 0.5
    keys = ["host", "port", "user", "mode", "retries", "name", "path", "timeout", "level", "color"]
    values = ["localhost", "8080", "admin", "fast", "3", "blue", "/tmp/x", "30", "debug", "", "007", "a b"]
    inputs = []
    for _ in range(6):
        segs = []
        for _ in range(rng.randint(1, 5)):
            r = rng.random()
            if r < 0.1:
                segs.append(rng.choice(["", "  "]))
            elif r < 0.17:
                segs.append(rng.choice(["novalue", " junk "]))
            else:
                k = rng.choice(keys)
                val = rng.choice(values)
                if rng.random() < 0.15:
                    val = f"x{kvs}y"
                pad = [rng.choice(["", " "]) for _ in range(3)]
                segs.append(pad[0] + k + pad[1] + kvs + pad[2] + val)
        inputs.append((ps.join(segs),))
    inputs.append(("",))
    ret = "dict[str, str | int]" if to_int else "dict[str, str]"
    int_clause = (" After stripping, a value made only of the ASCII digits 0-9 (at least one digit) is "
                  "converted "
                  "with `int()`; every other value stays a string." if to_int else " Values stay strings.")
    conv = "int(value) if value and all(c in \"0123456789\" for c in value) else value" if to_int else "value"
    code = f'''
        def parse_kv(s: str) -> {ret}:
            result = {{}}
            for segment in s.split({ps!r}):
                if {kvs!r} not in segment:
                    continue
                key, value = segment.split({kvs!r}, 1)
                key, value = key.strip(), value.strip()
                result[key] = {conv}
            return result
        '''
    return _t("parse_kv", f"(s: str) -> {ret}",
              f"Parse a string of key/value pairs into a dict. Pairs are separated by '{ps}', and inside a "
              f"pair the key is separated from the value by the first '{kvs}'. Strip surrounding whitespace "
              f"from keys and values. Skip segments that contain no '{kvs}' (including empty ones). If a key "
              f"occurs more than once, the last occurrence wins.{int_clause}", code, inputs, "hard")


def _f_reverse_words(rng: random.Random) -> dict:
    v = rng.randrange(2)
    inputs = [(_rtext(rng, 1, 5).lower().replace(" ", rng.choice([" ", "  "]),
                                                 1),) for _ in range(5)] + [("   ",)]
    inputs.insert(2, ("  " + _rtext(rng, 2, 3) + "\t",))
    if v == 0:
        return _t("reverse_words", "(s: str) -> str",
                  "Return the words of `s` in reverse order, joined by single spaces. Words are separated by "
                  "runs of whitespace; leading and trailing whitespace is ignored, so a blank string gives "
                  "''.", '''
                  def reverse_words(s: str) -> str:
                      return " ".join(reversed(s.split()))
                  ''', inputs, "easy")
    return _t("reverse_each_word", "(s: str) -> str",
              "Reverse the characters of every word of `s` but keep the words in their original order, and "
              "return them joined by single spaces. Words are the pieces returned by `s.split()` (so runs of "
              "whitespace collapse and a blank string gives '').", '''
              def reverse_each_word(s: str) -> str:
                  return " ".join(w[::-1] for w in s.split())
              ''', inputs, "easy")


def _runs(rng: random.Random, max_run: int = 12) -> str:
    out, prev = [], ""
    for _ in range(rng.randint(1, 5)):
        ch = rng.choice([c for c in "abcdexyz" if c != prev])
        out.append(ch * rng.choice([1, 1, 2, 3, 4, rng.randint(5, max_run)]))
        prev = ch
    return "".join(out)


def _f_rle(rng: random.Random) -> dict:
    v = rng.randrange(4)
    inputs = [(_runs(rng),) for _ in range(5)] + [("",)]
    if v == 0:
        return _t("rle_encode", "(s: str) -> str",
                  "Run-length encode `s`: every maximal run of the same character becomes that character "
                  "followed by the run length in decimal, for example 'aaab' -> 'a3b1' and 'zzzzzzzzzzzz' -> "
                  "'z12'. The empty string encodes to ''.", '''
                  def rle_encode(s: str) -> str:
                      out = []
                      i = 0
                      while i < len(s):
                          j = i
                          while j < len(s) and s[j] == s[i]:
                              j += 1
                          out.append(f"{s[i]}{j - i}")
                          i = j
                      return "".join(out)
                  ''', inputs, "hard")
    if v == 1:
        return _t("rle_encode", "(s: str) -> str",
                  "Run-length encode `s`: every maximal run of the same character becomes the run length in "
                  "decimal followed by the character, for example 'aaab' -> '3a1b'. The empty string encodes "
                  "to ''.", '''
                  def rle_encode(s: str) -> str:
                      out = []
                      i = 0
                      while i < len(s):
                          j = i
                          while j < len(s) and s[j] == s[i]:
                              j += 1
                          out.append(f"{j - i}{s[i]}")
                          i = j
                      return "".join(out)
                  ''', inputs, "hard")
    if v == 2:
        return _t("compress_runs", "(s: str) -> str",
                  "Compress `s` by replacing every maximal run of the same character with the character "
                  "followed by the run length, but leave the count out when the run has length 1: 'aaabcc' "
                  "-> 'a3bc2'. The empty string gives ''.", '''
                  def compress_runs(s: str) -> str:
                      out = []
                      i = 0
                      while i < len(s):
                          j = i
                          while j < len(s) and s[j] == s[i]:
                              j += 1
                          out.append(s[i] if j - i == 1 else f"{s[i]}{j - i}")
                          i = j
                      return "".join(out)
                  ''', inputs, "hard")

    def enc(s: str) -> str:
        out, i = [], 0
        while i < len(s):
            j = i
            while j < len(s) and s[j] == s[i]:
                j += 1
            out.append(f"{s[i]}{j - i}")
            i = j
        return "".join(out)
    return _t("rle_decode", "(s: str) -> str",
              "Decode a run-length encoded string in which each letter is followed by its repeat count in "
              "decimal (the count may have several digits and is at least 1): 'a3b1c12' -> 'aaab' + 'c' * "
              "12. The empty string decodes to ''.", '''
              def rle_decode(s: str) -> str:
                  out = []
                  i = 0
                  while i < len(s):
                      ch = s[i]
                      j = i + 1
                      while j < len(s) and s[j].isdigit():
                          j += 1
                      out.append(ch * int(s[i + 1:j]))
                      i = j
                  return "".join(out)
              ''', [(enc(s),) for (s,) in inputs], "hard")


def _f_caesar(rng: random.Random) -> dict:
    inputs = [(_rtext(rng, 1, 4),) for _ in range(5)] + [("Hello, World!",)]
    rng.shuffle(inputs)
    if rng.random() < 0.4:
        ks = [rng.randint(-30, 60) for _ in range(len(inputs))]
        return _t("caesar", "(s: str, k: int) -> str",
                  "Shift every ASCII letter of `s` by `k` positions in the alphabet, wrapping around ('z' "
                  "shifted by 1 is 'a') and keeping its case. `k` may be negative or larger than 26. All "
                  "other characters stay unchanged.", '''
                  def caesar(s: str, k: int) -> str:
                      out = []
                      for ch in s:
                          if "a" <= ch <= "z":
                              out.append(chr((ord(ch) - 97 + k) % 26 + 97))
                          elif "A" <= ch <= "Z":
                              out.append(chr((ord(ch) - 65 + k) % 26 + 65))
                          else:
                              out.append(ch)
                      return "".join(out)
                  ''', [(s, k) for (s,), k in zip(inputs, ks, strict=True)], "easy")
    k = rng.choice([13, 3, 5, 7, 1, 11])
    name = "rot13" if k == 13 else f"shift{k}"
    code = f'''
        def {name}(s: str) -> str:
            out = []
            for ch in s:
                if "a" <= ch <= "z":
                    out.append(chr((ord(ch) - 97 + {k}) % 26 + 97))
                elif "A" <= ch <= "Z":
                    out.append(chr((ord(ch) - 65 + {k}) % 26 + 65))
                else:
                    out.append(ch)
            return "".join(out)
        '''
    return _t(name, "(s: str) -> str",
              f"Return `s` with every ASCII letter moved {k} place{'s' if k > 1 else ''} forward in the "
              f"alphabet, wrapping around from 'z' to 'a' (and 'Z' to 'A') and keeping upper/lower case. "
              f"Non-letters are unchanged.", code, inputs, "easy")


def _nested(rng: random.Random, depth: int) -> list:
    out: list = []
    for _ in range(rng.randint(0, 3)):
        if depth > 0 and rng.random() < 0.45:
            out.append(_nested(rng, depth - 1))
        else:
            out.append(rng.randint(0, 9))
    return out


def _f_flatten(rng: random.Random) -> dict:
    if rng.random() < 0.5:
        inputs = [([_rints(rng, 0, 3, 0, 9) for _ in range(rng.randint(0, 4))],) for _ in range(6)]
        return _t("flatten", "(xss: list[list[int]]) -> list[int]",
                  "Concatenate the inner lists of `xss` into one list, keeping their order. Only one level "
                  "of nesting exists; empty inner lists contribute nothing.", '''
                  def flatten(xss: list[list[int]]) -> list[int]:
                      return [x for xs in xss for x in xs]
                  ''', inputs, "easy")
    inputs = [(_nested(rng, 3),) for _ in range(5)] + [([1, [2, [3, [4, [5]]]]],), ([[], [[]]],)]
    rng.shuffle(inputs)
    return _t("flatten_deep", "(x: list) -> list",
              "Flatten an arbitrarily nested list: return a flat list with all non-list elements of `x` in "
              "the order they appear (depth-first, left to right). Only `list` objects are flattened; "
              "everything else is an element.", '''
              def flatten_deep(x: list) -> list:
                  out = []
                  for item in x:
                      if isinstance(item, list):
                          out.extend(flatten_deep(item))
                      else:
                          out.append(item)
                  return out
              ''', inputs, "hard")


def _f_chunk(rng: random.Random) -> dict:
    v = rng.randrange(3)
    inputs = [(_rints(rng, 0 if k == 0 else 1, 9, 0, 50), rng.randint(1, 4)) for k in range(6)]
    if v == 0:
        return _t("chunk", "(xs: list[int], n: int) -> list[list[int]]",
                  "Split `xs` into consecutive chunks of length `n` (n >= 1) and return them as a list of "
                  "lists. The last chunk may be shorter than `n`. An empty list gives [].", '''
                  def chunk(xs: list[int], n: int) -> list[list[int]]:
                      return [xs[i:i + n] for i in range(0, len(xs), n)]
                  ''', inputs, "easy")
    if v == 1:
        return _t("full_chunks", "(xs: list[int], n: int) -> list[list[int]]",
                  "Split `xs` into consecutive chunks of exactly `n` elements (n >= 1) and return them as a "
                  "list of lists; leftover elements at the end that do not fill a whole chunk are "
                  "dropped.", '''
                  def full_chunks(xs: list[int], n: int) -> list[list[int]]:
                      return [xs[i:i + n] for i in range(0, len(xs) - n + 1, n)]
                  ''', inputs, "easy")
    return _t("chunk_padded", "(xs: list[int], n: int, fill: int) -> list[list[int]]",
              "Split `xs` into consecutive chunks of length `n` (n >= 1). If the last chunk is shorter than "
              "`n`, pad it at the end with copies of `fill`. An empty list gives [].", '''
              def chunk_padded(xs: list[int], n: int, fill: int) -> list[list[int]]:
                  out = []
                  for i in range(0, len(xs), n):
                      part = xs[i:i + n]
                      out.append(part + [fill] * (n - len(part)))
                  return out
              ''', [(xs, n, rng.choice([0, -1, 99])) for xs, n in inputs], "easy")


def _f_dedupe(rng: random.Random) -> dict:
    v = rng.randrange(3)
    ints = [(_rints(rng, 0 if k == 0 else 3, 10, 0, 6),) for k in range(6)]
    if v == 0:
        return _t("dedupe", "(xs: list[int]) -> list[int]",
                  "Return the elements of `xs` without duplicates, keeping the first occurrence of each "
                  "value and the original order.", '''
                  def dedupe(xs: list[int]) -> list[int]:
                      seen = set()
                      out = []
                      for x in xs:
                          if x not in seen:
                              seen.add(x)
                              out.append(x)
                      return out
                  ''', ints, "easy")
    if v == 1:
        return _t("dedupe_keep_last", "(xs: list[int]) -> list[int]",
                  "Remove duplicates from `xs`, keeping the last occurrence of each value: the result lists "
                  "each distinct value once, ordered by the position of its last occurrence. Example: [1, 2, "
                  "1, 3] -> [2, 1, 3].", '''
                  def dedupe_keep_last(xs: list[int]) -> list[int]:
                      last = {x: i for i, x in enumerate(xs)}
                      return [x for i, x in enumerate(xs) if last[x] == i]
                  ''', ints, "hard")
    words = []
    for _ in range(6):
        base = rng.sample(C_WORDS[:12], rng.randint(2, 4))
        ws = [rng.choice([w, w.upper(), w.capitalize()]) for w in base for _ in range(rng.randint(1, 2))]
        rng.shuffle(ws)
        words.append((ws,))
    return _t("dedupe_words", "(words: list[str]) -> list[str]",
              "Remove case-insensitive duplicates from `words`: keep only the first occurrence of each word "
              "(comparing with `str.lower()`), with its original spelling, and keep the original order.", '''
              def dedupe_words(words: list[str]) -> list[str]:
                  seen = set()
                  out = []
                  for w in words:
                      key = w.lower()
                      if key not in seen:
                          seen.add(key)
                          out.append(w)
                  return out
              ''', words, "easy")


def _f_kth(rng: random.Random) -> dict:
    v = rng.randrange(3)
    lists = [(_rints(rng, 0 if k == 0 else 1, 8, -5, 12),) for k in range(5)]
    lists += [([4, 4, 4],), ([7, 3, 7, 5],)]
    if v == 0:
        return _t("second_largest", "(xs: list[int]) -> int | None",
                  "Return the second largest distinct value in `xs`, or None if `xs` has fewer than two "
                  "distinct values. Example: [5, 5, 3] -> 3.", '''
                  def second_largest(xs: list[int]) -> int | None:
                      values = sorted(set(xs), reverse=True)
                      return values[1] if len(values) >= 2 else None
                  ''', lists, "easy")
    if v == 1:
        return _t("second_smallest", "(xs: list[int]) -> int | None",
                  "Return the second smallest distinct value in `xs`, or None if `xs` has fewer than two "
                  "distinct values. Example: [1, 1, 4] -> 4.", '''
                  def second_smallest(xs: list[int]) -> int | None:
                      values = sorted(set(xs))
                      return values[1] if len(values) >= 2 else None
                  ''', lists, "easy")
    return _t("kth_largest_distinct", "(xs: list[int], k: int) -> int | None",
              "Return the k-th largest distinct value of `xs` (k = 1 is the maximum), or None if `xs` has "
              "fewer than `k` distinct values. `k` is at least 1.", '''
              def kth_largest_distinct(xs: list[int], k: int) -> int | None:
                  values = sorted(set(xs), reverse=True)
                  return values[k - 1] if k <= len(values) else None
              ''', [(xs, rng.randint(1, 4)) for (xs,) in lists], "easy")


def _f_windows(rng: random.Random) -> dict:
    v = rng.randrange(3)
    inputs = [(_rints(rng, 0 if k == 0 else 2, 8, -5, 20), rng.randint(1, 4)) for k in range(6)]
    if v == 0:
        return _t("window_sums", "(xs: list[int], k: int) -> list[int]",
                  "Return the sums of all contiguous windows of length `k` (k >= 1) of `xs`, from left to "
                  "right. If `k` is larger than `len(xs)`, return [].", '''
                  def window_sums(xs: list[int], k: int) -> list[int]:
                      return [sum(xs[i:i + k]) for i in range(len(xs) - k + 1)]
                  ''', inputs, "easy")
    if v == 1:
        return _t("max_window_sum", "(xs: list[int], k: int) -> int | None",
                  "Return the largest sum of any contiguous window of exactly `k` elements of `xs` (k >= 1), "
                  "or None if `xs` has fewer than `k` elements.", '''
                  def max_window_sum(xs: list[int], k: int) -> int | None:
                      if k > len(xs):
                          return None
                      return max(sum(xs[i:i + k]) for i in range(len(xs) - k + 1))
                  ''', inputs, "easy")
    return _t("moving_average", "(xs: list[int], k: int) -> list[float]",
              "Return the average of every contiguous window of length `k` (k >= 1) of `xs`, from left to "
              "right, each computed as `round(sum(window) / k, 2)`. If `k > len(xs)` return [].", '''
              def moving_average(xs: list[int], k: int) -> list[float]:
                  return [round(sum(xs[i:i + k]) / k, 2) for i in range(len(xs) - k + 1)]
              ''', inputs, "easy")


def _f_gcd(rng: random.Random) -> dict:
    base = [rng.choice([2, 3, 4, 6, 5, 7]) for _ in range(6)]
    inputs = [([b * rng.randint(1, 12) for _ in range(rng.randint(1, 4))],) for b in base]
    if rng.random() < 0.5:
        return _t("gcd_list", "(xs: list[int]) -> int",
                  "Return the greatest common divisor of all numbers in `xs` (a non-empty list of positive "
                  "integers). For a single number, return that number.", '''
                  from math import gcd

                  def gcd_list(xs: list[int]) -> int:
                      g = 0
                      for x in xs:
                          g = gcd(g, x)
                      return g
                  ''', inputs, "easy")
    small = [([rng.randint(1, 15) for _ in range(rng.randint(1, 4))],) for _ in range(6)]
    return _t("lcm_list", "(xs: list[int]) -> int",
              "Return the least common multiple of all numbers in `xs` (a non-empty list of positive "
              "integers).", '''
              from math import gcd

              def lcm_list(xs: list[int]) -> int:
                  result = 1
                  for x in xs:
                      result = result * x // gcd(result, x)
                  return result
              ''', small, "easy")


def _f_primes(rng: random.Random) -> dict:
    v = rng.randrange(4)
    if v == 0:
        inputs = [(n,) for n in rng.sample([0, 1, 2, 3, 4, 9, 17, 25, 29, 91, 97, 121, 7919, -7], 6)]
        return _t("is_prime", "(n: int) -> bool",
                  "Return True if `n` is a prime number. Numbers below 2 (including negatives) are not "
                  "prime.", '''
                  def is_prime(n: int) -> bool:
                      if n < 2:
                          return False
                      i = 2
                      while i * i <= n:
                          if n % i == 0:
                              return False
                          i += 1
                      return True
                  ''', inputs, "easy")
    if v == 1:
        inputs = [(n,) for n in rng.sample([0, 1, 2, 10, 13, 20, 30, 31, 50], 5)]
        return _t("primes_up_to", "(n: int) -> list[int]",
                  "Return all prime numbers less than or equal to `n`, in increasing order ([] if there are "
                  "none).",
                  '''
                  def primes_up_to(n: int) -> list[int]:
                      if n < 2:
                          return []
                      sieve = [True] * (n + 1)
                      sieve[0] = sieve[1] = False
                      for i in range(2, int(n ** 0.5) + 1):
                          if sieve[i]:
                              for j in range(i * i, n + 1, i):
                                  sieve[j] = False
                      return [i for i, p in enumerate(sieve) if p]
                  ''', inputs, "easy")
    if v == 2:
        inputs = [(n,) for n in rng.sample([1, 2, 3, 5, 10, 25, 50, 100], 5)]
        return _t("nth_prime", "(n: int) -> int",
                  "Return the n-th prime number, counting from 1: nth_prime(1) is 2, nth_prime(2) is 3. `n` "
                  "is at least 1.", '''
                  def nth_prime(n: int) -> int:
                      count = 0
                      candidate = 1
                      while count < n:
                          candidate += 1
                          if all(candidate % p for p in range(2, int(candidate ** 0.5) + 1)):
                              count += 1
                      return candidate
                  ''', inputs, "easy")
    inputs = [(n,) for n in rng.sample([2, 12, 17, 60, 84, 97, 360, 1001, 1024, 9973], 6)]
    return _t("prime_factors", "(n: int) -> list[int]",
              "Return the prime factorisation of `n` (n >= 2) as a list of primes in non-decreasing order, "
              "repeated according to multiplicity: prime_factors(12) == [2, 2, 3].", '''
              def prime_factors(n: int) -> list[int]:
                  out = []
                  d = 2
                  while d * d <= n:
                      while n % d == 0:
                          out.append(d)
                          n //= d
                      d += 1
                  if n > 1:
                      out.append(n)
                  return out
              ''', inputs, "hard")


def _f_digits(rng: random.Random) -> dict:
    v = rng.randrange(3)
    nums = [rng.choice([rng.randint(0, 9), rng.randint(10, 999), rng.randint(1000, 10**7)]) for _ in range(5)]
    if v == 0:
        return _t("digit_sum", "(n: int) -> int",
                  "Return the sum of the decimal digits of `n`, ignoring its sign: digit_sum(-123) == 6.", '''
                  def digit_sum(n: int) -> int:
                      return sum(int(c) for c in str(abs(n)))
                  ''', [(n,) for n in nums] + [(-rng.randint(10, 999),)], "easy")
    if v == 1:
        return _t("digital_root", "(n: int) -> int",
                  "Return the digital root of `n` (n >= 0): repeatedly replace the number by the sum of its "
                  "decimal digits until a single digit remains.", '''
                  def digital_root(n: int) -> int:
                      while n >= 10:
                          n = sum(int(c) for c in str(n))
                      return n
                  ''', [(n,) for n in nums] + [(0,)], "easy")
    return _t("reverse_digits", "(n: int) -> int",
              "Return the integer whose decimal digits are those of `n` in reverse order, keeping the sign "
              "of `n`; leading zeros of the result disappear: reverse_digits(-120) == -21.", '''
              def reverse_digits(n: int) -> int:
                  r = int(str(abs(n))[::-1])
                  return -r if n < 0 else r
              ''', [(n,) for n in nums] + [(-rng.randint(10, 9999),), (rng.randint(1, 99) * 100,)], "easy")


def _f_base(rng: random.Random) -> dict:
    v = rng.randrange(4)
    nums = [0] + [rng.randint(1, 5000) for _ in range(5)]
    rng.shuffle(nums)
    if v == 0:
        return _t("to_base", "(n: int, base: int) -> str",
                  "Return the representation of the non-negative integer `n` in the given base (2 <= base <= "
                  "36), using the digits 0-9 followed by lowercase a-z, without any prefix. to_base(0, b) is "
                  "'0'.", '''
                  def to_base(n: int, base: int) -> str:
                      digits = "0123456789abcdefghijklmnopqrstuvwxyz"
                      if n == 0:
                          return "0"
                      out = []
                      while n:
                          n, r = divmod(n, base)
                          out.append(digits[r])
                      return "".join(reversed(out))
                  ''', [(n, rng.choice([2, 3, 7, 8, 16, 36])) for n in nums], "hard")
    if v == 1:
        def to_base(n: int, base: int) -> str:
            digits = "0123456789abcdefghijklmnopqrstuvwxyz"
            out = []
            while True:
                n, r = divmod(n, base)
                out.append(digits[r])
                if not n:
                    return "".join(reversed(out))
        cases = []
        for n in nums:
            b = rng.choice([2, 5, 8, 16, 36])
            s = to_base(n, b)
            cases.append((s.upper() if rng.random() < 0.3 else s, b))
        return _t("from_base", "(s: str, base: int) -> int",
                  "Convert the string `s` of digits in the given base (2 <= base <= 36) to an int. Digits "
                  "are 0-9 then letters a-z for 10-35, and letters may be upper or lower case. `s` is "
                  "non-empty, has no sign or prefix, and is valid for the base.", '''
                  def from_base(s: str, base: int) -> int:
                      digits = "0123456789abcdefghijklmnopqrstuvwxyz"
                      n = 0
                      for ch in s.lower():
                          n = n * base + digits.index(ch)
                      return n
                  ''', cases, "hard")
    name, b, word = rng.choice([("to_binary", 2, "binary"), ("to_octal", 8, "octal"),
                                ("to_hex", 16, "hexadecimal")])
    code = f'''
        def {name}(n: int) -> str:
            digits = "0123456789abcdef"
            if n == 0:
                return "0"
            out = []
            while n:
                n, r = divmod(n, {b})
                out.append(digits[r])
            return "".join(reversed(out))
        '''
    return _t(name, "(n: int) -> str",
              f"Return the {word} representation of the non-negative integer `n` as a string without any "
              f"prefix"
              + (" (lowercase letters a-f)" if b == 16 else "") + f"; {name}(0) is '0'.", code,
              [(n,) for n in nums], "easy")


def _f_roman(rng: random.Random) -> dict:
    nums = rng.sample([1, 4, 9, 14, 40, 90, 400, 1994, 2024, 3999, 58, 444, 999, 1666, 2719, 3888], 6)
    code_to = '''
        def to_roman(n: int) -> str:
            table = [(1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
                     (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")]
            out = []
            for value, sym in table:
                while n >= value:
                    out.append(sym)
                    n -= value
            return "".join(out)
        '''
    if rng.random() < 0.5:
        return _t("to_roman", "(n: int) -> str",
                  "Convert `n` (1 <= n <= 3999) to an uppercase Roman numeral in standard subtractive form "
                  "(4 is 'IV', 9 is 'IX', 40 is 'XL', 90 is 'XC', 400 is 'CD', 900 is 'CM').", code_to,
                  [(n,) for n in nums], "hard")
    ns: dict = {}
    exec(textwrap.dedent(code_to), ns)
    return _t("from_roman", "(s: str) -> int",
              "Convert a valid uppercase Roman numeral in standard subtractive form (values 1 to 3999) to an "
              "int: from_roman('MCMXCIV') == 1994.", '''
              def from_roman(s: str) -> int:
                  values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
                  total = 0
                  for i, ch in enumerate(s):
                      v = values[ch]
                      if i + 1 < len(s) and values[s[i + 1]] > v:
                          total -= v
                      else:
                          total += v
                  return total
              ''', [(ns["to_roman"](n),) for n in nums], "hard")


def _f_words(rng: random.Random) -> dict:
    v = rng.randrange(3)
    texts = []
    for _ in range(6):
        pool = rng.sample(C_WORDS, 4)
        words = rng.choices(pool, k=rng.randint(3, 9))
        texts.append((" ".join(rng.choice([w, w.capitalize(), w + ","]) for w in words),))
    if v == 0:
        return _t("word_counts", "(s: str) -> dict[str, int]",
                  "Count the words in `s`. A word is a maximal run of ASCII letters a-z or A-Z; words are "
                  "compared case-insensitively and the keys of the returned dict are lowercase.", '''
                  import re

                  def word_counts(s: str) -> dict[str, int]:
                      counts = {}
                      for w in re.findall(r"[a-z]+", s.lower()):
                          counts[w] = counts.get(w, 0) + 1
                      return counts
                  ''', texts + [("",)], "easy")
    if v == 1:
        return _t("top_words", "(s: str, k: int) -> list[str]",
                  "Return the `k` most frequent words of `s`, most frequent first, breaking ties "
                  "alphabetically. A word is a maximal run of ASCII letters, compared case-insensitively and "
                  "returned in lowercase. If there are fewer than `k` distinct words, return all of "
                  "them.", '''
                  import re

                  def top_words(s: str, k: int) -> list[str]:
                      counts = {}
                      for w in re.findall(r"[a-z]+", s.lower()):
                          counts[w] = counts.get(w, 0) + 1
                      ranked = sorted(counts, key=lambda w: (-counts[w], w))
                      return ranked[:k]
                  ''', [(t, rng.randint(1, 4)) for (t,) in texts], "hard")
    return _t("longest_word", "(s: str) -> str",
              "Return the longest word in `s`, where a word is a maximal run of ASCII letters (keep its "
              "original case). If several words share the maximum length, return the first of them; return "
              "'' if `s` has no letters.", '''
              import re

              def longest_word(s: str) -> str:
                  best = ""
                  for w in re.findall(r"[A-Za-z]+", s):
                      if len(w) > len(best):
                          best = w
                  return best
              ''', texts + [("1, 2, 3",)], "easy")


def _f_prefix(rng: random.Random) -> dict:
    stems = ["inter", "pre", "flow", "trans", "auto", "micro", "over"]
    tails = ["net", "view", "state", "er", "ing", "mat", "", "phone", "load"]
    cases = []
    for _ in range(6):
        stem = rng.choice(stems)
        cases.append(([stem + rng.choice(tails) for _ in range(rng.randint(1, 4))] + ([rng.choice(C_WORDS)] if
                      rng.random() < 0.3 else []),))
    cases.append(([],))
    if rng.random() < 0.6:
        return _t("longest_common_prefix", "(strs: list[str]) -> str",
                  "Return the longest string that is a prefix of every string in `strs`; return '' for an "
                  "empty list or when there is no common prefix.", '''
                  def longest_common_prefix(strs: list[str]) -> str:
                      if not strs:
                          return ""
                      prefix = strs[0]
                      for s in strs[1:]:
                          while not s.startswith(prefix):
                              prefix = prefix[:-1]
                      return prefix
                  ''', cases, "easy")
    rev = [([w[::-1] for w in ws],) for (ws,) in cases]
    return _t("longest_common_suffix", "(strs: list[str]) -> str",
              "Return the longest string that is a suffix of every string in `strs`; return '' for an empty "
              "list or when there is no common suffix.", '''
              def longest_common_suffix(strs: list[str]) -> str:
                  if not strs:
                      return ""
                  suffix = strs[0]
                  for s in strs[1:]:
                      while not s.endswith(suffix):
                          suffix = suffix[1:]
                  return suffix
              ''', rev, "easy")


def _f_anagram(rng: random.Random) -> dict:
    pairs = [("listen", "Silent"), ("night", "thing"), ("stressed", "desserts"), ("tea", "eat"),
             ("apple", "paple"),
             ("dormitory", "dirty room"), ("tiger", "tigers"), ("echo", "oche"), ("mango", "among"),
             ("astronomer", "moon starer"), ("harbor", "rabbit")]
    if rng.random() < 0.6:
        inputs = rng.sample(pairs, 6)
        return _t("is_anagram", "(a: str, b: str) -> bool",
                  "Return True if `a` and `b` are anagrams of each other when case is ignored and space "
                  "characters (' ') are removed; every other character counts.", '''
                  def is_anagram(a: str, b: str) -> bool:
                      def norm(s: str) -> list[str]:
                          return sorted(s.replace(" ", "").lower())
                      return norm(a) == norm(b)
                  ''', inputs, "easy")
    pool = ["listen", "silent", "enlist", "tea", "eat", "ate", "night", "thing", "stone", "notes", "onset",
            "echo",
            "apple", "tiger", "mango", "among"]
    inputs = [(rng.sample(pool, rng.randint(2, 7)),) for _ in range(5)] + [([],)]
    return _t("group_anagrams", "(words: list[str]) -> list[list[str]]",
              "Group the words that are anagrams of each other (same letters, same counts, case-sensitive). "
              "Return a list of groups ordered by the first appearance of each group in `words`; inside a "
              "group keep the input order. Every word belongs to exactly one group.", '''
              def group_anagrams(words: list[str]) -> list[list[str]]:
                  groups = {}
                  for w in words:
                      groups.setdefault("".join(sorted(w)), []).append(w)
                  return list(groups.values())
              ''', inputs, "hard")


def _matrix(rng: random.Random, square: bool = False) -> list[list[int]]:
    r = rng.randint(1, 4)
    c = r if square else rng.randint(1, 4)
    return [[rng.randint(0, 9) for _ in range(c)] for _ in range(r)]


def _f_matrix(rng: random.Random) -> dict:
    v = rng.randrange(4)
    mats = [(_matrix(rng, square=(v == 3)),) for _ in range(6)]
    if v == 0:
        return _t("transpose", "(m: list[list[int]]) -> list[list[int]]",
                  "Return the transpose of the rectangular matrix `m` (a list of equally long rows): row i "
                  "of the result is column i of `m`. An empty matrix gives [].", '''
                  def transpose(m: list[list[int]]) -> list[list[int]]:
                      return [list(col) for col in zip(*m)]
                  ''', mats + [([],)], "easy")
    if v == 1:
        return _t("rotate_clockwise", "(m: list[list[int]]) -> list[list[int]]",
                  "Return the rectangular matrix `m` (a non-empty list of equally long non-empty rows) "
                  "rotated 90 degrees clockwise: the first row of the result is the first column of `m` read "
                  "from bottom to top.", '''
                  def rotate_clockwise(m: list[list[int]]) -> list[list[int]]:
                      return [list(row) for row in zip(*m[::-1])]
                  ''', mats, "hard")
    if v == 2:
        return _t("rotate_counterclockwise", "(m: list[list[int]]) -> list[list[int]]",
                  "Return the rectangular matrix `m` (a non-empty list of equally long non-empty rows) "
                  "rotated 90 degrees counter-clockwise: the first row of the result is the last column of "
                  "`m` read from top to bottom.", '''
                  def rotate_counterclockwise(m: list[list[int]]) -> list[list[int]]:
                      return [list(row) for row in zip(*m)][::-1]
                  ''', mats, "hard")
    return _t("diagonal_sum", "(m: list[list[int]]) -> int",
              "Return the sum of both diagonals of the square matrix `m` (n x n, n >= 1). When n is odd the "
              "centre element lies on both diagonals and is counted only once.", '''
              def diagonal_sum(m: list[list[int]]) -> int:
                  n = len(m)
                  total = sum(m[i][i] + m[i][n - 1 - i] for i in range(n))
                  if n % 2 == 1:
                      total -= m[n // 2][n // 2]
                  return total
              ''', mats, "easy")


def _f_intervals(rng: random.Random) -> dict:
    inputs = []
    for _ in range(6):
        ivs = []
        for _ in range(rng.randint(0, 5)):
            a = rng.randint(0, 20)
            ivs.append([a, a + rng.randint(0, 6)])
        inputs.append((ivs,))
    if rng.random() < 0.6:
        return _t("merge_intervals", "(intervals: list[list[int]]) -> list[list[int]]",
                  "Each interval is a list [start, end] with start <= end, describing the closed range from "
                  "start to end. Merge all intervals that overlap or touch (e.g. [1, 3] and [3, 5] become "
                  "[1, 5], but [1, 2] and [3, 4] stay separate) and return the merged intervals sorted by "
                  "start. The input may be unsorted; [] gives [].", '''
                  def merge_intervals(intervals: list[list[int]]) -> list[list[int]]:
                      merged = []
                      for start, end in sorted(intervals):
                          if merged and start <= merged[-1][1]:
                              merged[-1][1] = max(merged[-1][1], end)
                          else:
                              merged.append([start, end])
                      return merged
                  ''', inputs, "hard")
    return _t("covered_length", "(intervals: list[list[int]]) -> int",
              "Each interval [start, end] (start <= end) covers the real numbers from start to end and has "
              "length end - start. Return the total length of the union of all intervals, so overlapping "
              "parts are only counted once. [] gives 0.", '''
              def covered_length(intervals: list[list[int]]) -> int:
                  total = 0
                  cur_start = cur_end = None
                  for start, end in sorted(intervals):
                      if cur_end is None or start > cur_end:
                          if cur_end is not None:
                              total += cur_end - cur_start
                          cur_start, cur_end = start, end
                      else:
                          cur_end = max(cur_end, end)
                  if cur_end is not None:
                      total += cur_end - cur_start
                  return total
              ''', inputs, "hard")


def _f_brackets(rng: random.Random) -> dict:
    pairs = rng.choice(["()", "()[]", "()[]{}", "()[]{}<>"])
    opens, closes = pairs[0::2], pairs[1::2]
    inputs = []
    for k in range(6):
        stack, out = [], []
        for _ in range(rng.randint(2, 8)):
            if stack and rng.random() < 0.5:
                out.append(closes[opens.index(stack.pop())])
            else:
                o = rng.choice(opens)
                stack.append(o)
                out.append(o)
            if rng.random() < 0.3:
                out.append(rng.choice(["x", "1", " ", "+"]))
        out += [closes[opens.index(o)] for o in reversed(stack)]
        s = "".join(out)
        if k % 2 == 1 and len(s) > 1:  # break it
            i = rng.randrange(len(s))
            s = s[:i] + s[i + 1:] if rng.random() < 0.5 else s[::-1]
        inputs.append((s,))
    inputs.append(("",))
    listing = ", ".join(f"'{o}{c}'" for o, c in zip(opens, closes, strict=True))
    code = f'''
        def is_balanced(s: str) -> bool:
            pairs = {dict(zip(closes, opens, strict=True))!r}
            stack = []
            for ch in s:
                if ch in {opens!r}:
                    stack.append(ch)
                elif ch in pairs:
                    if not stack or stack.pop() != pairs[ch]:
                        return False
            return not stack
        '''
    return _t("is_balanced", "(s: str) -> bool",
              f"Return True if the brackets in `s` are balanced and properly nested. The bracket pairs are "
              f"{listing}; every other character is ignored. The empty string is "
              f"balanced.", code, inputs, "hard")


def _f_case(rng: random.Random) -> dict:
    v = rng.randrange(3)
    snakes = ["_".join(rng.sample(["user", "id", "max", "retry", "count", "http", "request", "total", "price",
                                   "first",
                                   "name", "is", "valid"], rng.randint(1, 4))) for _ in range(6)]
    if v == 0:
        return _t("snake_to_camel", "(s: str) -> str",
                  "Convert a snake_case identifier (lowercase words joined by single underscores) to "
                  "lowerCamelCase: 'max_retry_count' -> 'maxRetryCount'. A single word is returned "
                  "unchanged.", '''
                  def snake_to_camel(s: str) -> str:
                      first, *rest = s.split("_")
                      return first + "".join(w.capitalize() for w in rest)
                  ''', [(s,) for s in snakes], "easy")
    if v == 1:
        return _t("snake_to_pascal", "(s: str) -> str",
                  "Convert a snake_case identifier (lowercase words joined by single underscores) to "
                  "PascalCase: 'http_request' -> 'HttpRequest'.", '''
                  def snake_to_pascal(s: str) -> str:
                      return "".join(w.capitalize() for w in s.split("_"))
                  ''', [(s,) for s in snakes], "easy")

    def camel(s: str) -> str:
        first, *rest = s.split("_")
        return first + "".join(w.capitalize() for w in rest)
    return _t("camel_to_snake", "(s: str) -> str",
              "Convert a lowerCamelCase identifier made of ASCII letters (no digits) to snake_case: insert "
              "'_' before every uppercase letter and make it lowercase: 'maxRetryCount' -> "
              "'max_retry_count'.", '''
              def camel_to_snake(s: str) -> str:
                  out = []
                  for ch in s:
                      if ch.isupper():
                          out.append("_" + ch.lower())
                      else:
                          out.append(ch)
                  return "".join(out)
              ''', [(camel(s),) for s in snakes], "easy")


def _f_duration(rng: random.Random) -> dict:
    v = rng.randrange(3)
    secs = [rng.choice([0, rng.randint(1, 59), rng.randint(60, 3599), rng.randint(3600, 200000)])
            for _ in range(6)]
    if v == 0:
        inputs = []
        for s in secs:
            h, rem = divmod(s, 3600)
            m, sec = divmod(rem, 60)
            parts = [f"{h}h", f"{m}m", f"{sec}s"]
            parts = [p for p in parts if not p.startswith("0") or rng.random() < 0.3] or ["0s"]
            rng.shuffle(parts)
            inputs.append(("".join(parts),))
        return _t("parse_duration", "(s: str) -> int",
                  "Parse a compact duration such as '1h30m' or '45s' or '2h5s' and return the total number "
                  "of seconds. The string is a concatenation of one or more parts, each a non-negative "
                  "integer immediately followed by a unit letter 'h', 'm' or 's'. Units may appear in any "
                  "order, each at most once.", '''
                  import re

                  def parse_duration(s: str) -> int:
                      factors = {"h": 3600, "m": 60, "s": 1}
                      return sum(int(n) * factors[u] for n, u in re.findall(r"(\\d+)([hms])", s))
                  ''', inputs, "hard")
    if v == 1:
        inputs = []
        for s in secs:
            h, rem = divmod(s, 3600)
            m, sec = divmod(rem, 60)
            inputs.append((f"{h:02d}:{m:02d}:{sec:02d}" if rng.random() < 0.7 else f"{h}:{m:02d}:{sec:02d}",))
        return _t("hms_to_seconds", "(s: str) -> int",
                  "Convert a time span written as 'H:MM:SS' to seconds. The hours part has one or more "
                  "digits (it may exceed 23 and may have a leading zero); minutes and seconds always have "
                  "two digits.", '''
                  def hms_to_seconds(s: str) -> int:
                      h, m, sec = (int(p) for p in s.split(":"))
                      return h * 3600 + m * 60 + sec
                  ''', inputs, "easy")
    return _t("format_duration", "(seconds: int) -> str",
              "Format a non-negative number of seconds as hours, minutes and seconds like '1h 2m 3s'. Leave "
              "out parts that are zero ('1h 5s'), do not wrap hours into days, separate parts by single "
              "spaces, and return '0s' for 0.", '''
              def format_duration(seconds: int) -> str:
                  if seconds == 0:
                      return "0s"
                  h, rem = divmod(seconds, 3600)
                  m, s = divmod(rem, 60)
                  parts = []
                  if h:
                      parts.append(f"{h}h")
                  if m:
                      parts.append(f"{m}m")
                  if s:
                      parts.append(f"{s}s")
                  return " ".join(parts)
              ''', [(s,) for s in secs] + [(3600,)], "hard")


def _f_csv(rng: random.Random) -> dict:
    delim = rng.choice([",", ";"])
    raw_fields = ["alpha", "beta gamma", "", "42", f"x{delim}y", 'say "hi"', "3.5", "north", " padded "]
    inputs = []
    for _ in range(6):
        fields = rng.sample(raw_fields, rng.randint(1, 5))
        cells = []
        for f in fields:
            if delim in f or '"' in f or rng.random() < 0.2:
                cells.append('"' + f.replace('"', '""') + '"')
            else:
                cells.append(f)
        inputs.append((delim.join(cells),))
    code = f'''
        def split_csv_line(line: str) -> list[str]:
            fields = []
            cur = []
            in_quotes = False
            i = 0
            while i < len(line):
                ch = line[i]
                if in_quotes:
                    if ch == '"':
                        if i + 1 < len(line) and line[i + 1] == '"':
                            cur.append('"')
                            i += 1
                        else:
                            in_quotes = False
                    else:
                        cur.append(ch)
                elif ch == '"':
                    in_quotes = True
                elif ch == {delim!r}:
                    fields.append("".join(cur))
                    cur = []
                else:
                    cur.append(ch)
                i += 1
            fields.append("".join(cur))
            return fields
        '''
    return _t("split_csv_line", "(line: str) -> list[str]",
              f"Split one line of delimited text into fields. Fields are separated by '{delim}'. A field may "
              f"be enclosed in double quotes; inside quotes '{delim}' is an ordinary character and two "
              f"double quotes (\"\") stand for one literal double quote. The enclosing quotes are not part "
              f"of the value. Unquoted fields are returned exactly as written (no stripping), and an empty "
              f"field gives ''. Quotes only ever enclose whole fields.", code, inputs, "hard")


def _f_group(rng: random.Random) -> dict:
    inputs = [(rng.sample(C_WORDS, rng.randint(0 if k == 0 else 2, 7)),) for k in range(6)]
    if rng.random() < 0.5:
        return _t("group_by_length", "(words: list[str]) -> dict[int, list[str]]",
                  "Group `words` by length: return a dict mapping each length to the list of words of that "
                  "length, in their original order.", '''
                  def group_by_length(words: list[str]) -> dict[int, list[str]]:
                      groups = {}
                      for w in words:
                          groups.setdefault(len(w), []).append(w)
                      return groups
                  ''', inputs, "easy")
    mixed = [([rng.choice([w, w.capitalize()]) for w in ws] + ([""] if rng.random() < 0.3 else []),)
             for (ws,) in inputs]
    return _t("group_by_initial", "(words: list[str]) -> dict[str, list[str]]",
              "Group `words` by their first letter, case-insensitively: return a dict mapping each lowercase "
              "first letter to the list of words (original spelling, original order) that start with it. "
              "Empty strings are skipped.", '''
              def group_by_initial(words: list[str]) -> dict[str, list[str]]:
                  groups = {}
                  for w in words:
                      if w:
                          groups.setdefault(w[0].lower(), []).append(w)
                  return groups
              ''', mixed, "easy")


def _f_rotate(rng: random.Random) -> dict:
    inputs = [(_rints(rng, 0 if j == 0 else 1, 7, 0, 9), rng.randint(-9, 12)) for j in range(6)]
    if rng.random() < 0.5:
        return _t("rotate_right", "(xs: list[int], k: int) -> list[int]",
                  "Return a new list with the elements of `xs` rotated `k` positions to the right (the last "
                  "element moves to the front when k = 1). `k` may be larger than the length; a negative `k` "
                  "rotates to the left. An empty list gives [].", '''
                  def rotate_right(xs: list[int], k: int) -> list[int]:
                      if not xs:
                          return []
                      k %= len(xs)
                      return xs[-k:] + xs[:-k] if k else list(xs)
                  ''', inputs, "easy")
    return _t("rotate_left", "(xs: list[int], k: int) -> list[int]",
              "Return a new list with the elements of `xs` rotated `k` positions to the left (the first "
              "element moves to the end when k = 1). `k` may be larger than the length; a negative `k` "
              "rotates to the right. An empty list gives [].", '''
              def rotate_left(xs: list[int], k: int) -> list[int]:
                  if not xs:
                      return []
                  k %= len(xs)
                  return xs[k:] + xs[:k]
              ''', inputs, "easy")


def _f_search(rng: random.Random) -> dict:
    if rng.random() < 0.5:
        inputs = []
        for _ in range(6):
            xs = sorted(rng.sample(range(-20, 60), rng.randint(0, 9)))
            t = rng.choice(xs) if xs and rng.random() < 0.6 else rng.randint(-25, 65)
            inputs.append((xs, t))
        return _t("binary_search", "(xs: list[int], target: int) -> int",
                  "`xs` is sorted in increasing order and has no duplicates. Return the index of `target` in "
                  "`xs`, or -1 if it is not present. Use binary search (O(log n)).", '''
                  def binary_search(xs: list[int], target: int) -> int:
                      lo, hi = 0, len(xs) - 1
                      while lo <= hi:
                          mid = (lo + hi) // 2
                          if xs[mid] == target:
                              return mid
                          if xs[mid] < target:
                              lo = mid + 1
                          else:
                              hi = mid - 1
                      return -1
                  ''', inputs, "easy")
    inputs = []
    for _ in range(6):
        xs = sorted(rng.choices(range(0, 15), k=rng.randint(0, 8)))
        inputs.append((xs, rng.choice(xs) if xs and rng.random() < 0.6 else rng.randint(-2, 17)))
    return _t("insertion_index", "(xs: list[int], target: int) -> int",
              "`xs` is sorted in non-decreasing order and may contain duplicates. Return the leftmost index "
              "at which `target` could be inserted while keeping `xs` sorted (i.e. the number of elements "
              "strictly less than `target`). Do not use the `bisect` module.", '''
              def insertion_index(xs: list[int], target: int) -> int:
                  lo, hi = 0, len(xs)
                  while lo < hi:
                      mid = (lo + hi) // 2
                      if xs[mid] < target:
                          lo = mid + 1
                      else:
                          hi = mid
                  return lo
              ''', inputs, "hard")


def _f_sequences(rng: random.Random) -> dict:
    v = rng.randrange(3)
    if v == 0:
        return _t("pascal_row", "(n: int) -> list[int]",
                  "Return row `n` of Pascal's triangle, counting rows from 0: pascal_row(0) == [1], "
                  "pascal_row(3) == [1, 3, 3, 1].", '''
                  def pascal_row(n: int) -> list[int]:
                      row = [1]
                      for _ in range(n):
                          row = [a + b for a, b in zip([0] + row, row + [0])]
                      return row
                  ''', [(n,) for n in rng.sample(range(0, 12), 6)], "easy")
    if v == 1:
        return _t("collatz_steps", "(n: int) -> int",
                  "Return how many steps the Collatz process needs to reach 1 from `n` (n >= 1): in each "
                  "step an even number is halved and an odd number x becomes 3 * x + 1. collatz_steps(1) == "
                  "0.", '''
                  def collatz_steps(n: int) -> int:
                      steps = 0
                      while n != 1:
                          n = n // 2 if n % 2 == 0 else 3 * n + 1
                          steps += 1
                      return steps
                  ''', [(n,) for n in rng.sample(range(1, 60), 6)], "easy")
    return _t("collatz_sequence", "(n: int) -> list[int]",
              "Return the Collatz sequence starting at `n` (n >= 1) and ending at 1, both included: an even "
              "number is followed by its half, an odd number x > 1 by 3 * x + 1. collatz_sequence(1) == "
              "[1].", '''
              def collatz_sequence(n: int) -> list[int]:
                  seq = [n]
                  while n != 1:
                      n = n // 2 if n % 2 == 0 else 3 * n + 1
                      seq.append(n)
                  return seq
              ''', [(n,) for n in rng.sample(range(1, 30), 6)], "easy")


def _f_truncate(rng: random.Random) -> dict:
    suffix = rng.choice(["...", "…", "~", " [more]"])
    inputs = []
    for _ in range(6):
        s = _rtext(rng, 1, 6)
        n = rng.randint(len(suffix), max(len(suffix) + 1, len(s) + 3))
        inputs.append((s, n))
    code = f'''
        def truncate(s: str, n: int) -> str:
            suffix = {suffix!r}
            if len(s) <= n:
                return s
            return s[:n - len(suffix)] + suffix
        '''
    return _t("truncate", "(s: str, n: int) -> str",
              f"Shorten `s` to at most `n` characters. If `len(s) <= n` return `s` unchanged; otherwise "
              f"return the first `n - {len(suffix)}` characters of `s` followed by the suffix {suffix!r} "
              f"({len(suffix)} character{'s' if len(suffix) > 1 else ''}), so the result has exactly `n` "
              f"characters. You may assume `n >= {len(suffix)}`.", code, inputs, "easy")


def _f_ipv4(rng: random.Random) -> dict:
    good = [".".join(str(rng.randint(0, 255)) for _ in range(4)) for _ in range(2)]
    bad = ["256.1.1.1", "1.2.3", "01.2.3.4", "1.2.3.4.5", "a.b.c.d", "1..2.3", "1.2.3.-4", "0.0.0.0",
           "192.168.1.1",
           " 1.2.3.4", "1.2.3.04", "255.255.255.255", "1.2.3.4\n"]
    inputs = [(s,) for s in good + rng.sample(bad, 5)]
    rng.shuffle(inputs)
    return _t("is_valid_ipv4", "(s: str) -> bool",
              "Return True if `s` is a dotted-decimal IPv4 address: exactly four parts separated by '.', "
              "each part made only of ASCII digits, with a value from 0 to 255 and no leading zeros (so '0' "
              "is fine but '01' is not). Nothing else (spaces, signs, newlines) is allowed anywhere.", '''
              def is_valid_ipv4(s: str) -> bool:
                  parts = s.split(".")
                  if len(parts) != 4:
                      return False
                  for p in parts:
                      if not p or not all(c in "0123456789" for c in p):
                          return False
                      if len(p) > 1 and p[0] == "0":
                          return False
                      if int(p) > 255:
                          return False
                  return True
              ''', inputs, "hard")


def _f_mask(rng: random.Random) -> dict:
    k = rng.choice([2, 3, 4])
    ch = rng.choice(["*", "#", "X"])
    inputs = [("".join(rng.choice("0123456789") for _ in range(rng.randint(0, 16))),) for _ in range(6)]
    inputs.insert(1, ("".join(rng.choice("0123456789") for _ in range(k)),))
    code = f'''
        def mask(s: str) -> str:
            if len(s) <= {k}:
                return s
            return {ch!r} * (len(s) - {k}) + s[-{k}:]
        '''
    return _t("mask", "(s: str) -> str",
              f"Mask a card or account number: replace every character of `s` except the last {k} with "
              f"'{ch}'. If `s` has {k} characters or fewer, return it unchanged.", code, inputs, "easy")


def _f_calendar(rng: random.Random) -> dict:
    years = rng.sample([1900, 2000, 2023, 2024, 2100, 1996, 2400, 1800, 2020, 2019], 6)
    if rng.random() < 0.5:
        return _t("is_leap_year", "(year: int) -> bool",
                  "Return True if `year` is a leap year in the Gregorian calendar: divisible by 4, except "
                  "years divisible by 100, which are leap years only when also divisible by 400.", '''
                  def is_leap_year(year: int) -> bool:
                      return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
                  ''', [(y,) for y in years], "easy")
    return _t("days_in_month", "(year: int, month: int) -> int",
              "Return the number of days in the given month (1-12) of the given Gregorian year, taking leap "
              "years into account (February has 29 days in years divisible by 4, except century years not "
              "divisible by 400). Do not use the `calendar` or `datetime` modules.", '''
              def days_in_month(year: int, month: int) -> int:
                  if month == 2:
                      leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
                      return 29 if leap else 28
                  return 30 if month in (4, 6, 9, 11) else 31
              ''', [(y, rng.choice([2, 2, 4, 7, 9, 12, 11])) for y in years], "easy")


def _f_running(rng: random.Random) -> dict:
    v = rng.randrange(3)
    inputs = [(_rints(rng, 0 if k == 0 else 1, 8, -9, 15),) for k in range(6)]
    name, word, fn = [("running_total", "sum", "total += x"), ("running_max", "maximum",
                                                               "best = max(best, x)"),
                      ("running_min", "minimum", "best = min(best, x)")][v]
    if v == 0:
        code = '''
            def running_total(xs: list[int]) -> list[int]:
                out = []
                total = 0
                for x in xs:
                    total += x
                    out.append(total)
                return out
            '''
    else:
        code = f'''
            def {name}(xs: list[int]) -> list[int]:
                out = []
                for i, x in enumerate(xs):
                    best = x if i == 0 else {"max" if v == 1 else "min"}(best, x)
                    out.append(best)
                return out
            '''
    return _t(name, "(xs: list[int]) -> list[int]",
              f"Return a list of the same length as `xs` whose i-th element is the {word} of xs[0] to xs[i] "
              f"(inclusive). An empty list gives [].", code, inputs, "easy")


def _f_ranges(rng: random.Random) -> dict:
    dash = rng.choice(["-", ".."])
    sep = rng.choice([",", ", "])
    min_run = rng.choice([2, 3])
    inputs = []
    for _ in range(6):
        xs, x = [], rng.randint(0, 5)
        for _ in range(rng.randint(0, 5)):
            run = rng.choice([1, 1, 2, 3, 4])
            xs.extend(range(x, x + run))
            x += run + rng.randint(1, 3)
        inputs.append((xs,))
    code = f'''
        def compress_ranges(xs: list[int]) -> str:
            parts = []
            i = 0
            while i < len(xs):
                j = i
                while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
                    j += 1
                if j - i + 1 >= {min_run}:
                    parts.append(str(xs[i]) + {dash!r} + str(xs[j]))
                else:
                    parts.extend(str(x) for x in xs[i:j + 1])
                i = j + 1
            return {sep!r}.join(parts)
        '''
    return _t("compress_ranges", "(xs: list[int]) -> str",
              f"`xs` is sorted in increasing order, has no duplicates and contains only non-negative "
              f"integers. Collapse every maximal run of at least {min_run} consecutive integers into "
              f"'first{dash}last', write every other number on its own, and join all pieces with {sep!r}. "
              f"Example: [1, 2, 3, 5] -> '1{dash}3{sep}5'. An empty list gives ''.", code, inputs, "hard")


def _f_nested_get(rng: random.Random) -> dict:
    sep = rng.choice([".", "/"])
    data = {"db": {"host": "localhost", "port": 5432, "opts": {"ssl": True}}, "name": "svc",
            "tags": ["a", "b"],
            "limits": {"cpu": 2, "mem": {"max": 512}}}
    paths = ["db.host", "db.port", "db.opts.ssl", "name", "limits.mem.max", "db.user", "name.first", "tags.0",
             "limits.cpu", "missing", "limits.mem"]
    inputs = [(copy.deepcopy(data), p.replace(".", sep), rng.choice([None, 0,
                                                                     "n/a"])) for p in rng.sample(paths, 6)]
    code = f'''
        def nested_get(d: dict, path: str, default=None):
            current = d
            for key in path.split({sep!r}):
                if not isinstance(current, dict) or key not in current:
                    return default
                current = current[key]
            return current
        '''
    return _t("nested_get", "(d: dict, path: str, default=None)",
              f"Look up a value in nested dicts by a path of keys separated by '{sep}' (e.g. 'db{sep}host' "
              f"means d['db']['host']). Return `default` as soon as a key is missing or the current value is "
              f"not a dict (lists are not indexed).", code, inputs, "easy")


def _f_invert(rng: random.Random) -> dict:
    inputs = [({w: rng.randint(1, 4) for w in rng.sample(C_WORDS, rng.randint(0 if k == 0 else 2, 6))},)
              for k in range(6)]
    return _t("invert_dict", "(d: dict[str, int]) -> dict[int, list[str]]",
              "Invert `d`: return a dict that maps each value of `d` to the alphabetically sorted list of "
              "keys that have that value.", '''
              def invert_dict(d: dict[str, int]) -> dict[int, list[str]]:
                  out = {}
                  for key, value in d.items():
                      out.setdefault(value, []).append(key)
                  return {value: sorted(keys) for value, keys in out.items()}
              ''', inputs, "easy")


def _f_bits(rng: random.Random) -> dict:
    if rng.random() < 0.5:
        return _t("count_bits", "(n: int) -> int",
                  "Return the number of 1 bits in the binary representation of the non-negative integer "
                  "`n`.", '''
                  def count_bits(n: int) -> int:
                      return bin(n).count("1")
                  ''', [(n,) for n in [0] + [rng.randint(1, 10**6) for _ in range(5)]], "easy")
    return _t("hamming_distance", "(a: int, b: int) -> int",
              "Return the number of bit positions in which the non-negative integers `a` and `b` differ.", '''
              def hamming_distance(a: int, b: int) -> int:
                  return bin(a ^ b).count("1")
              ''', [(rng.randint(0, 255), rng.randint(0, 255)) for _ in range(5)] + [(7, 7)], "easy")


def _f_majority(rng: random.Random) -> dict:
    inputs = []
    for k in range(6):
        xs = _rints(rng, 1, 7, 0, 3)
        if k % 2 == 0:
            xs += [xs[0]] * (len(xs) + 1)
            rng.shuffle(xs)
        inputs.append((xs,))
    inputs.append(([],))
    return _t("majority_element", "(xs: list[int]) -> int | None",
              "Return the value that occurs more than len(xs) / 2 times in `xs`, or None if there is no such "
              "value (including for an empty list).", '''
              def majority_element(xs: list[int]) -> int | None:
                  counts = {}
                  for x in xs:
                      counts[x] = counts.get(x, 0) + 1
                  for x, c in counts.items():
                      if c * 2 > len(xs):
                          return x
                  return None
              ''', inputs, "easy")


def _f_pairs(rng: random.Random) -> dict:
    inputs = []
    for k in range(6):
        xs = _rints(rng, 0 if k == 0 else 3, 9, -3, 9)
        if len(xs) >= 2 and rng.random() < 0.8:
            i, j = rng.sample(range(len(xs)), 2)
            target = xs[i] + xs[j]
        else:
            target = rng.randint(0, 12)
        inputs.append((xs, target))
    return _t("pair_sums", "(xs: list[int], target: int) -> list[tuple[int, int]]",
              "Return every distinct pair of values (a, b) with a <= b and a + b == target that can be "
              "formed from two different positions of `xs`. Each pair appears once even if it can be formed "
              "in several ways, and the list is sorted in increasing order.", '''
              def pair_sums(xs: list[int], target: int) -> list[tuple[int, int]]:
                  counts = {}
                  for x in xs:
                      counts[x] = counts.get(x, 0) + 1
                  pairs = []
                  for a in sorted(counts):
                      b = target - a
                      if b < a:
                          continue
                      if (b == a and counts[a] >= 2) or (b != a and b in counts):
                          pairs.append((a, b))
                  return pairs
              ''', inputs, "hard")


def _f_interleave(rng: random.Random) -> dict:
    inputs = [(_rints(rng, 0, 5, 0, 9), _rints(rng, 0, 5, 10, 30)) for _ in range(6)]
    return _t("interleave", "(a: list[int], b: list[int]) -> list[int]",
              "Return a new list that alternates elements of `a` and `b`, starting with a[0], then b[0], "
              "a[1], b[1], and so on. When one list runs out, append the rest of the other list.", '''
              def interleave(a: list[int], b: list[int]) -> list[int]:
                  out = []
                  for i in range(max(len(a), len(b))):
                      if i < len(a):
                          out.append(a[i])
                      if i < len(b):
                          out.append(b[i])
                  return out
              ''', inputs, "easy")


def _f_title(rng: random.Random) -> dict:
    minor = rng.choice([("a", "an", "the", "of"), ("and", "or", "of", "in"),
                        ("the", "to", "at", "on", "for")])
    vocab = list(minor) + ["river", "night", "LANTERN", "harbor", "Echo", "stone", "orbit", "quiet"]
    inputs = [(" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 6))),) for _ in range(6)]
    minor_literal = "{" + ", ".join(repr(m) for m in minor) + "}"
    code = f'''
        def title_case(s: str) -> str:
            minor = {minor_literal}
            words = s.split(" ")
            out = []
            for i, w in enumerate(words):
                lw = w.lower()
                if i > 0 and lw in minor:
                    out.append(lw)
                else:
                    out.append(lw[:1].upper() + lw[1:])
            return " ".join(out)
        '''
    listing = ", ".join(repr(m) for m in minor)
    return _t("title_case", "(s: str) -> str",
              f"Convert `s` to title case. Words are separated by single spaces. Every word becomes "
              f"lowercase with its first letter uppercased, except the minor words {listing}, which stay "
              f"entirely lowercase unless they are the first word.", code, inputs, "easy")


CODING_FAMILIES = [
    _f_count, _f_clamp, _f_palindrome, _f_fizzbuzz, _f_multiples, _f_parse_kv, _f_reverse_words, _f_rle,
    _f_caesar,
    _f_flatten, _f_chunk, _f_dedupe, _f_kth, _f_windows, _f_gcd, _f_primes, _f_digits, _f_base, _f_roman,
    _f_words,
    _f_prefix, _f_anagram, _f_matrix, _f_intervals, _f_brackets, _f_case, _f_duration, _f_csv, _f_group,
    _f_rotate,
    _f_search, _f_sequences, _f_truncate, _f_ipv4, _f_mask, _f_calendar, _f_running, _f_ranges, _f_nested_get,
    _f_invert, _f_bits, _f_majority, _f_pairs, _f_interleave, _f_title,
]

# Long-context material for coding prompts (written for this file).
C_CONTEXT_MODULES = ["ingest/normalize.py", "billing/helpers.py", "reports/textutils.py", "scheduler/util.py",
                     "etl/transforms.py", "support/tickets.py"]
C_CONTEXT_PARAGRAPHS = [
    "You are contributing to `{module}`, a small utility module used by our data-ingestion service. The "
    "service reads records from partner feeds, normalises them and writes them to the warehouse every few "
    "minutes. Most of this module was written quickly during a migration and is now being cleaned up one "
    "function at a time, so new functions should be self-contained and easy to test in isolation.",
    "Coding conventions for this module: target Python 3.10, use only the standard library, put type hints "
    "on the signature, and do not print or log anything. Functions must not mutate their arguments; if you "
    "need to modify a list or dict, work on a copy. Avoid global state and do not read environment variables "
    "or files. Readability matters more than micro-optimisation, but avoid anything quadratic when a linear "
    "approach is obvious.",
    "Our CI runs a set of unit tests against the function, including edge cases such as empty inputs, single "
    "elements and unusual but valid values. The tests compare return values exactly, so pay attention to the "
    "return type described in the task (a list versus a tuple, an int versus a string, None versus an empty "
    "value). Raising an exception is only acceptable where the task explicitly says so.",
    "In a previous review a colleague pointed out that several helpers in this module handled invalid input "
    "in inconsistent ways. We have since agreed that each function documents exactly which inputs it "
    "supports, and callers are responsible for validating anything else. You can therefore rely on the "
    "assumptions stated in the task and do not need defensive checks beyond them.",
    "The function will be called from a loop that processes tens of thousands of records per batch. It does "
    "not need to be heavily optimised, but please avoid repeated string concatenation in nested loops and "
    "avoid sorting inside a loop. Recursion is fine as long as its depth is bounded by the size of a single "
    "record, which is always small in practice.",
    "Please keep the exact function name and parameter names given below, because other modules import the "
    "function by name and some call sites pass arguments by keyword. Do not add extra required parameters. "
    "You may define small private helpers inside the function body if that makes the code clearer, but the "
    "answer should be a single top-level function definition plus any standard-library imports it needs.",
    "Background: the previous implementation of this helper lived in a spreadsheet macro that the operations "
    "team maintained by hand. When the macro was retired, its behaviour was written down as the "
    "specification below, and a few edge cases that used to be handled inconsistently were settled in a "
    "design meeting. Follow the specification literally, even where the old macro behaved differently.",
]
C_CONTEXT_SNIPPETS = [
    '''_DEFAULT_BATCH_SIZE = 500


def _batched(items, size=_DEFAULT_BATCH_SIZE):
    """Yield successive slices of `items` with at most `size` elements."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def normalise_header(name: str) -> str:
    """Lower-case a column header and replace runs of whitespace with one underscore."""
    return "_".join(name.strip().lower().split())


def is_blank(value) -> bool:
    """True for None, empty strings and strings made only of whitespace."""
    return value is None or (isinstance(value, str) and not value.strip())''',
    '''from dataclasses import dataclass


@dataclass(frozen=True)
class Record:
    source: str
    key: str
    payload: dict


def record_key(record: Record) -> tuple[str, str]:
    """Stable sort key used when records are written to the warehouse."""
    return (record.source, record.key)


def merge_payloads(a: dict, b: dict) -> dict:
    """Shallow merge; values from `b` win. Neither argument is modified."""
    merged = dict(a)
    merged.update(b)
    return merged''',
    '''RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


def should_retry(status: int, attempt: int, max_attempts: int = 5) -> bool:
    """Decide whether a failed partner-feed request is worth another attempt."""
    return status in RETRYABLE_STATUS and attempt < max_attempts


def backoff_seconds(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff without jitter, capped at `cap` seconds."""
    return min(cap, base * (2 ** attempt))''',
]


def _call(name: str, args: tuple) -> str:
    return f"{name}({', '.join(repr(a) for a in args)})"


def _assert_line(name: str, args: tuple, out) -> str:
    call = _call(name, args)
    if out is None or isinstance(out, bool):
        return f"assert {call} is {out!r}"
    return f"assert {call} == {out!r}"


def _run_cases(task: dict) -> list[tuple[tuple, object]]:
    ns: dict = {}
    exec(task["code"], ns)
    fn = ns[task["name"]]
    cases, seen = [], set()
    for args in task["inputs"]:
        key = repr(args)
        if key in seen:
            continue
        seen.add(key)
        arg_copy = copy.deepcopy(args)
        out = fn(*arg_copy)
        if arg_copy != args:
            raise AssertionError(f"reference {task['name']} mutates its arguments")
        cases.append((args, out))
    return cases


def _long_context(rng: random.Random, body: str) -> str:
    module = rng.choice(C_CONTEXT_MODULES)
    paras = [p.replace("{module}", module) for p in C_CONTEXT_PARAGRAPHS]
    first, rest = paras[0], paras[1:]
    rng.shuffle(rest)
    chosen = [first] + rest[: rng.randint(3, 5)]
    snippet = rng.choice(C_CONTEXT_SNIPPETS)
    text = ("\n\n".join(chosen)
            + f"\n\nFor orientation, here is some of the code that already lives in `{module}`. "
            "You do not need to change or call any of "
            "it:\n\n```python\n" + snippet + "\n```\n\nTask:\n\n" + body)
    while _word_count(text) < 320:  # top up with the remaining paragraphs if the draw was short
        extra = rest[len(chosen) - 1]
        chosen.append(extra)
        text = "\n\n".join(chosen) + text[text.index("\n\nFor orientation"):]
    return text


def build_coding(seed: int = CODING_SEED) -> list[dict]:
    rng = random.Random(seed)
    long_idx = set(rng.sample(range(N_ITEMS), CODING_N_LONG))
    families = list(CODING_FAMILIES)
    items: list[dict] = []
    seen: set[str] = set()
    k = 0
    while len(items) < N_ITEMS:
        if k % len(families) == 0:
            rng.shuffle(families)
        task = families[k % len(families)](rng)
        k += 1
        cases = _run_cases(task)
        if len(cases) < 4:
            continue
        # show an informative case as the example (not an empty / None / zero result when avoidable)
        informative = [j for j, (_, o) in enumerate(cases)
                       if isinstance(o, bool) or o not in (None, 0, "", [], {})]
        pick = informative[0] if informative else 0
        example = cases[pick]
        tests = (cases[:pick] + cases[pick + 1:])[:5]
        ex_out = example[1]
        body = (f"Write a Python function `{task['name']}{task['sig']}`.\n\n{task['spec']}\n\n"
                f"For example, `{_call(task['name'], example[0])}` returns `{ex_out!r}`.")
        if body in seen:
            continue
        seen.add(body)
        i = len(items)
        is_long = i in long_idx
        content = _long_context(rng, body) if is_long else body
        items.append({
            "id": f"coding-{i + 1:04d}",
            "messages": [
                {"role": "system", "content": CODING_SYSTEM_PROMPT},
                {"role": "user", "content": content},
            ],
            "reference": task["code"],
            "slices": _slices("coding", [task["level"], "long_context" if is_long else "short_context"]),
            "max_tokens": 192,
            "meta": {"task": "code", "entry_point": task["name"],
                     "tests": [_assert_line(task["name"], a, o) for a, o in tests]},
        })
    return items


def run_coding_tests(item: dict) -> None:
    """Exec the reference in a fresh namespace and run its assert lines."""
    ns: dict = {}
    exec(item["reference"], ns)
    if item["meta"]["entry_point"] not in ns:
        raise AssertionError(f"{item['id']}: entry point missing")
    for line in item["meta"]["tests"]:
        exec(line, ns)


# ---------------------------------------------------------------------------
# build / serialise / check / write
# ---------------------------------------------------------------------------

def build_all() -> dict[str, list[dict]]:
    """All sets, keyed by file name relative to quality/."""
    return {
        FILES["voice"]: build_voice(),
        FILES["extraction"]: build_extraction(),
        FILES["coding"]: build_coding(),
    }


def serialize(items: list[dict]) -> str:
    lines = []
    for item in items:
        ordered = {k: item[k] for k in ITEM_KEYS if k in item}
        lines.append(json.dumps(ordered, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def schema_text() -> str:
    return json.dumps(INVOICE_SCHEMA, ensure_ascii=False, indent=2) + "\n"


def self_check(sets: dict[str, list[dict]]) -> None:
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(INVOICE_SCHEMA)
    validator = Draft202012Validator(INVOICE_SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
    for fname, items in sets.items():
        kind = fname.split(".")[0]
        ids = [it["id"] for it in items]
        assert len(items) >= 200, f"{fname}: only {len(items)} items"
        assert len(set(ids)) == len(ids), f"{fname}: duplicate ids"
        for it in items:
            assert set(it) <= set(ITEM_KEYS), f"{it['id']}: unexpected keys {set(it) - set(ITEM_KEYS)}"
            assert ("messages" in it) != ("prompt" in it), f"{it['id']}: need exactly one of messages/prompt"
            assert all(t in SLICE_TAGS[kind] for t in it["slices"]), f"{it['id']}: bad slice tags"
    for it in sets[FILES["extraction"]]:
        errors = list(validator.iter_errors(it["reference"]))
        assert not errors, f"{it['id']}: {errors[0].message}"
        check_extraction_item(it)
    for it in sets[FILES["coding"]]:
        run_coding_tests(it)
    voice = sets[FILES["voice"]]
    for label in VOICE_RARE:
        share = sum(it["reference"] == label for it in voice) / len(voice)
        assert 0.02 <= share < 0.05, f"rare label {label} has share {share:.3f}"


def main(argv: list[str]) -> int:
    check_only = "--check" in argv
    sets = build_all()
    self_check(sets)
    outputs = {name: serialize(items) for name, items in sets.items()}
    outputs[SCHEMA_FILE] = schema_text()
    stale = []
    for name, text in outputs.items():
        path = HERE / name
        if check_only:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    if stale:
        print("stale generated files (run python quality/generate.py):", ", ".join(stale), file=sys.stderr)
        return 1
    for name, items in sets.items():
        print(f"{'checked' if check_only else 'wrote'} {name}: {len(items)} items")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
