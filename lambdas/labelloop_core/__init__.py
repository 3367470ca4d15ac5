"""LabelLoop's pure domain package: label formats, box geometry, matching, consolidation,
the class registry, YOLO writing and calibration. No AWS imports; cheap to import.

Modules: `boxes`, `classes`, `matching`, `consolidation`, `manifest`, `yolo`, `calibration`,
`hashing`. The most used names are re-exported here.
"""

from .boxes import (
    Box,
    BoxError,
    box_from_yolo,
    box_to_yolo,
    boxes_from_rekognition,
    boxes_from_sagemaker_detector,
    clip_box,
    degenerate_reason,
    exif_inverse_box,
    exif_oriented_size,
    exif_transform_box,
)
from .calibration import (
    CalibrationError,
    CalibrationPair,
    ThresholdResult,
    calibrate,
    image_confidence,
    route,
)
from .classes import ClassMapError, ClassRegistry
from .consolidation import ConsolidationError, ConsolidationResult, consolidate
from .hashing import unit_hash
from .manifest import (
    ImageSize,
    LabeledImage,
    ManifestError,
    bbox_label_line,
    dumps_line,
    find_label_attributes,
    iter_manifest,
    parse_bbox_label,
    read_labeled_images,
    select_label_attribute,
)
from .matching import image_quality, iou, match_boxes
from .yolo import data_yaml, export_file_names, label_stem, split_for, yolo_label_text, yolo_text_from_line

__all__ = [
    "Box",
    "BoxError",
    "CalibrationError",
    "CalibrationPair",
    "ClassMapError",
    "ClassRegistry",
    "ConsolidationError",
    "ConsolidationResult",
    "ImageSize",
    "LabeledImage",
    "ManifestError",
    "ThresholdResult",
    "bbox_label_line",
    "box_from_yolo",
    "box_to_yolo",
    "boxes_from_rekognition",
    "boxes_from_sagemaker_detector",
    "calibrate",
    "clip_box",
    "consolidate",
    "data_yaml",
    "degenerate_reason",
    "dumps_line",
    "exif_inverse_box",
    "exif_oriented_size",
    "exif_transform_box",
    "export_file_names",
    "find_label_attributes",
    "image_confidence",
    "image_quality",
    "iou",
    "iter_manifest",
    "label_stem",
    "match_boxes",
    "parse_bbox_label",
    "read_labeled_images",
    "route",
    "select_label_attribute",
    "split_for",
    "unit_hash",
    "yolo_label_text",
    "yolo_text_from_line",
]
