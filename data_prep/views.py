"""View taxonomy shared by data prep, the synthetic archive and the view classifier."""

# The 11 coarse views of EchoPrime's released classifier, in its output order.
COARSE_VIEWS = ("A2C", "A3C", "A4C", "A5C", "Apical_Doppler", "Doppler_Parasternal_Long",
                "Doppler_Parasternal_Short", "Parasternal_Long", "Parasternal_Short", "SSN",
                "Subcostal")

# Views whose clips carry colour-flow Doppler.
DOPPLER_VIEWS = ("Apical_Doppler", "Doppler_Parasternal_Long", "Doppler_Parasternal_Short")
