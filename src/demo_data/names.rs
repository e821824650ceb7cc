//! The word lists the demo manifest draws from: candidates' and graders'
//! names, establishments, appreciations and annotation comments.
//!
//! The lists are deliberately varied: accents, apostrophes, hyphens,
//! particles, and names outside Latin-1, since those are what breaks search,
//! sorting, file names and PDF fonts.

/// Names from one background, drawn together so that a candidate's nom and
/// prénom usually match.
pub struct Origin {
    /// Relative frequency.
    pub weight: u32,
    pub noms: &'static [&'static str],
    pub prenoms: &'static [&'static str],
}

/// Candidates' name pools, most of them French.
pub const ORIGINS: &[Origin] = &[
    Origin {
        weight: 70,
        noms: &[
            "Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois", "Moreau", "Laurent",
            "Simon", "Michel", "Lefebvre", "Leroy", "Roux", "David", "Bertrand", "Morel", "Fournier", "Girard",
            "Bonnet", "Dupont", "Lambert", "Fontaine", "Rousseau", "Vincent", "Muller", "Lefèvre", "Faure", "André",
            "Mercier", "Blanc", "Guérin", "Boyer", "Garnier", "Chevalier", "François", "Legrand", "Gauthier", "Perrin",
            "Robin", "Clément", "Morin", "Nicolas", "Henry", "Roussel", "Mathieu", "Masson", "Marchand", "Duval",
            "Denis", "Dumont", "Lemaire", "Noël", "Meyer", "Dufour", "Meunier", "Brun", "Blanchard", "Giraud",
            "Joly", "Rivière", "Lucas", "Brunet", "Gaillard", "Barbier", "Arnaud", "Gérard", "Roche", "Renard",
            "Schmitt", "Roy", "Leroux", "Colin", "Vidal", "Caron", "Picard", "Fabre", "Aubert", "Lemoine",
            "Renaud", "Dumas", "Lacroix", "Olivier", "Bourgeois", "Benoît", "Leclerc", "Payet", "Guillaume", "Lecomte",
            "Hubert", "Berger", "Carpentier", "Dupuis", "Moulin", "Deschamps", "Huet", "Vasseur", "Boucher", "Fleury",
            "Carré", "Ménard", "Maillard", "Hervé", "Le Gall", "Léger", "Prévost", "Le Roux", "Le Goff", "Lévêque",
            "Barré", "Étienne", "Lemaître", "Bénard", "Maréchal", "Barthélemy", "Delaunay", "Dupont-Aignan",
            "Giscard-Lefèvre", "Saint-Martin", "Lebrun-Périer", "De La Fontaine", "Du Pré", "L'Huillier", "D'Arras",
        ],
        prenoms: &[
            "Léa", "Emma", "Chloé", "Manon", "Inès", "Camille", "Louise", "Jade", "Zoé", "Lina", "Hélène", "Noémie",
            "Maëlys", "Anaïs", "Océane", "Clémence", "Mathilde", "Elsa", "Agathe", "Juliette", "Romane", "Salomé",
            "Éloïse", "Bérénice", "Marie-Claire", "Anne-Sophie", "Marie-Ève", "Lou", "Margaux", "Gaëlle", "Lucas",
            "Hugo", "Louis", "Gabriel", "Arthur", "Jules", "Raphaël", "Noé", "Théo", "Nathan", "Mathéo", "Enzo", "Tom",
            "Maël", "Noël", "François", "Jérôme", "Jean-Baptiste", "Pierre-Louis", "Timothée", "Clément", "Adrien",
            "Baptiste", "Léo", "Éthan", "Gaël", "Loïc", "Benoît", "Célestin", "Anaël", "Joël", "Jean-Noël", "Zoë",
        ],
    },
    Origin {
        weight: 8,
        noms: &["N'Diaye", "Diallo", "Traoré", "Koné", "Camara", "Sy", "Cissé", "Diop", "Ba", "Keïta", "N'Guessan", "Touré"],
        prenoms: &["Aïssatou", "Fatoumata", "Mariam", "Awa", "Kadiatou", "Ibrahima", "Moussa", "Mamadou", "Seydou", "Aminata", "Ousmane", "Adama"],
    },
    Origin {
        weight: 8,
        noms: &["Benali", "Haddad", "Belkacem", "Mansouri", "Ben Ahmed", "El Amrani", "Boumediene", "Chérif", "Aït-Ouali", "Bouzid"],
        prenoms: &["Yasmine", "Nour", "Inès", "Sarah", "Amira", "Mohamed", "Yanis", "Rayan", "Adam", "Ilyès", "Anaïs", "Karim"],
    },
    Origin {
        weight: 4,
        noms: &["D'Almeida", "Dos Santos", "Ferreira", "Da Silva", "Gonçalves", "Rodrigues", "Pereira", "De Oliveira"],
        prenoms: &["Inês", "Beatriz", "João", "Tiago", "Gonçalo", "Mariana", "Rafael", "Leonor"],
    },
    Origin {
        weight: 4,
        noms: &["Nguyễn", "Trần", "Lê", "Phạm", "Đặng", "Võ", "Huỳnh", "Bùi"],
        prenoms: &["Linh", "Minh", "Thảo", "Khánh", "Hương", "Đức", "Quang", "Mai-Anh"],
    },
    Origin {
        weight: 3,
        noms: &["Şahin", "Yılmaz", "Öztürk", "Çelik", "Kaya", "Doğan", "Aydın"],
        prenoms: &["Elif", "Zeynep", "Emre", "Mehmet", "Ayşe", "Burak", "Büşra"],
    },
    Origin {
        weight: 3,
        noms: &["Kowalski", "Nowak", "Wiśniewski", "Wójcik", "Kowalczyk", "Zieliński", "Dąbrowska"],
        prenoms: &["Łukasz", "Paweł", "Małgorzata", "Zofia", "Jakub", "Agnieszka", "Michał"],
    },
];

/// The duplicated candidate: two of them in the same establishment.
pub const DUPLICATE: (&str, &str) = ("Martin", "Léa");

/// Names placed on purpose so that every dataset of ten candidates or more
/// has each feature; the first three alone cover them all (accent and
/// apostrophe, hyphens, non-Latin-1).
pub const FEATURED: &[(&str, &str)] = &[
    ("N'Diaye", "Hélène"),
    ("Dupont-Aignan", "Jean-Baptiste"),
    ("Nguyễn", "Linh"),
    ("D'Almeida", "François"),
    ("Kowalski", "Łukasz"),
    ("Şahin", "Elif"),
    ("Lefèvre", "Marie-Claire"),
    ("Noël", "Chloé"),
    ("Muller", "Zoë"),
];

/// Graders' noms.
pub const GRADER_NOMS: &[&str] = &[
    "Lambert", "Rousseau", "Fournier", "Lefèvre", "Mercier", "Bonnet", "Girard", "Dumont", "Chevalier", "Perrin",
    "Guérin", "Faure", "Rivière", "Le Bihan", "Benhamou", "N'Guyen", "Da Costa", "Sainte-Marie",
];

/// Graders' prénoms.
pub const GRADER_PRENOMS: &[&str] = &[
    "Isabelle", "Philippe", "Nathalie", "Stéphane", "Sylvie", "Frédéric", "Véronique", "Hervé", "Cécile", "Jérôme",
    "Anne-Laure", "Jean-François", "Sébastien", "Géraldine", "Benoît", "Maïté", "Agnès", "Grégoire",
];

/// The academies: code, name, cities with their department's UAI prefix.
pub struct AcademyDef {
    pub code: &'static str,
    pub name: &'static str,
    pub cities: &'static [(&'static str, u32)],
}

pub const ACADEMIES: [AcademyDef; 2] = [
    AcademyDef {
        code: "PARIS",
        name: "Académie de Paris",
        cities: &[
            ("Paris 3e", 75),
            ("Paris 5e", 75),
            ("Paris 11e", 75),
            ("Paris 12e", 75),
            ("Paris 13e", 75),
            ("Paris 14e", 75),
            ("Paris 15e", 75),
            ("Paris 17e", 75),
            ("Paris 18e", 75),
            ("Paris 20e", 75),
        ],
    },
    AcademyDef {
        code: "CRETEIL",
        name: "Académie de Créteil",
        cities: &[
            ("Créteil", 94),
            ("Vitry-sur-Seine", 94),
            ("Saint-Denis", 93),
            ("Montreuil", 93),
            ("Champigny-sur-Marne", 94),
            ("Meaux", 77),
            ("Melun", 77),
            ("Aubervilliers", 93),
            ("Ivry-sur-Seine", 94),
            ("Noisy-le-Grand", 93),
            ("Bobigny", 93),
            ("Fontainebleau", 77),
            ("L'Haÿ-les-Roses", 94),
            ("Saint-Maur-des-Fossés", 94),
        ],
    },
];

/// Lycée names (people, mostly), combined with a city.
pub const LYCEES: &[&str] = &[
    "Lycée Victor-Hugo",
    "Lycée Marie-Curie",
    "Lycée Jean-Jaurès",
    "Lycée Condorcet",
    "Lycée Paul-Éluard",
    "Lycée Jules-Ferry",
    "Lycée Louise-Michel",
    "Lycée Voltaire",
    "Lycée Simone-Veil",
    "Lycée Albert-Camus",
    "Lycée Léon-Blum",
    "Lycée Charlemagne",
    "Lycée Montaigne",
    "Lycée Hélène-Boucher",
    "Lycée Gustave-Eiffel",
    "Lycée Olympe-de-Gouges",
    "Lycée Jacques-Prévert",
    "Lycée Romain-Rolland",
    "Lycée Honoré-de-Balzac",
    "Lycée Colette",
    "Lycée Camille-Claudel",
    "Lycée Émile-Zola",
    "Lycée Pablo-Picasso",
    "Lycée Rosa-Parks",
    "Lycée George-Sand",
    "Lycée Lavoisier",
    "Lycée Guillaume-Apollinaire",
    "Lycée Françoise-Dolto",
    "Lycée Marcelin-Berthelot",
    "Lycée polyvalent Frédéric-Mistral",
];

/// The centre abroad, attached to the first academy.
pub const ABROAD: &str = "Lycée français Charles-de-Gaulle (Londres)";

/// Openings of an appreciation, by grade band (below 6, 6–10, 10–14,
/// 14–17, 17 and above).
pub const APPRECIATION_OPENINGS: [&[&str]; 5] = [
    &[
        "Copie très insuffisante.",
        "Travail très incomplet, le sujet n'est pas traité.",
        "Copie indigente : l'essentiel manque.",
    ],
    &[
        "Copie fragile.",
        "Des efforts, mais le travail reste superficiel.",
        "Quelques éléments pertinents, noyés dans des confusions.",
    ],
    &[
        "Copie correcte.",
        "Travail sérieux et globalement maîtrisé.",
        "Copie honnête, qui répond à l'essentiel.",
    ],
    &[
        "Bonne copie.",
        "Très bon travail, rigoureux et bien mené.",
        "Copie solide et bien construite.",
    ],
    &[
        "Excellente copie.",
        "Remarquable : une maîtrise rare.",
        "Copie brillante, d'une grande finesse.",
    ],
];

/// Remarks of an appreciation, by band as above.
pub const APPRECIATION_REMARKS: [&[&str]; 5] = [
    &[
        "Il faut revoir les notions de base du programme.",
        "Les consignes n'ont pas été lues avec attention.",
        "Aucune démarche n'est justifiée.",
    ],
    &[
        "La rédaction manque de rigueur et les justifications sont souvent absentes.",
        "Le raisonnement se perd ; pensez à annoncer un plan.",
        "Attention à l'orthographe et à la syntaxe.",
    ],
    &[
        "Quelques imprécisions, mais la démarche est claire.",
        "L'argumentation gagnerait à s'appuyer sur des exemples précis.",
        "La dernière partie est traitée trop rapidement.",
    ],
    &[
        "Les arguments sont précis et bien illustrés.",
        "Quelques maladresses d'expression n'entachent pas la qualité de l'ensemble.",
        "La problématique est bien posée et tenue jusqu'au bout.",
    ],
    &[
        "Raisonnement limpide, expression soignée : bravo.",
        "Une réflexion personnelle et nuancée, servie par une écriture élégante.",
        "Aucune erreur ; la présentation est exemplaire.",
    ],
];

/// Comments written on the pages.
pub const COMMENTS: &[&str] = &[
    "Bonne idée, à développer.",
    "Justifiez ce passage.",
    "Attention au signe.",
    "Hors sujet ici.",
    "Très bien !",
    "Confusion entre condition nécessaire et suffisante.",
    "Où est la conclusion ?",
    "Calcul juste mais non justifié.",
    "Orthographe : « événement ».",
    "Citation bien choisie.",
    "Transition maladroite.",
    "Exemple pertinent.",
    "Unité manquante.",
    "Développez l'argument.",
    "Repère chronologique erroné.",
    "Phrase incomplète.",
    "Oui, c'est l'idée.",
    "Démonstration à reprendre.",
];
