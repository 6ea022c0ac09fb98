"""Training: data, losses, regularisers, models, teachers and the trainer behind `lsr train`."""
