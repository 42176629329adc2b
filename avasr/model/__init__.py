from avasr.model.avsr import AVSRModel, build_model, count_parameters, lengths_to_mask

__all__ = ["AVSRModel", "build_model", "count_parameters", "lengths_to_mask"]
