"""TFDS builder `tiny_imagenet`: Tiny ImageNet (CS231n), prepared from the official zip placed by hand.

200 classes of 64×64 colour images: `train` (500 per class, 100,000) from `train/<wnid>/images/*.JPEG` and
`validation` (50 per class, 10,000) from `val/images` with labels from `val/val_annotations.txt`; the unlabelled
test set is not read. Labels index the sorted wnids, the order torchvision's `ImageFolder` gives the `train/`
folders; the wnids are the label names. The JPEG bytes are stored as they are (a few images are greyscale and
decode to three equal channels).
"""

import posixpath
import zipfile

import tensorflow_datasets as tfds

ARCHIVE = 'tiny-imagenet-200.zip'
NUM_CLASSES = 200


class TinyImagenet(tfds.core.GeneratorBasedBuilder):
  """Tiny ImageNet: 200 classes, 64×64, 100,000 train and 10,000 validation images."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  Download http://cs231n.stanford.edu/{ARCHIVE} (about 240 MB) and place it, not extracted, in the manual
  directory: <data_dir>/downloads/manual/{ARCHIVE} by default.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(64, 64, 3), encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage='http://cs231n.stanford.edu/',
    )

  def _split_generators(self, dl_manager):
    path = dl_manager.manual_dir / ARCHIVE
    if not path.exists():
      raise FileNotFoundError(f'{path} not found.\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    with path.open('rb') as f, zipfile.ZipFile(f) as archive:
      root = _root(archive)
      wnids = archive.read(root + 'wnids.txt').decode().split()
    if len(wnids) != NUM_CLASSES or len(set(wnids)) != NUM_CLASSES:
      raise ValueError(f'{root}wnids.txt in {path} lists {len(set(wnids))} distinct wnids, expected {NUM_CLASSES}.')
    self.info.features['label'].names = sorted(wnids)
    return {
        'train': self._generate_examples(path, 'train'),
        'validation': self._generate_examples(path, 'validation'),
    }

  def _generate_examples(self, path, split):
    label = self.info.features['label'].str2int
    with path.open('rb') as f, zipfile.ZipFile(f) as archive:
      root = _root(archive)
      if split == 'validation':
        wnid_of = {}
        for line in archive.read(root + 'val/val_annotations.txt').decode().splitlines():
          if line.strip():
            file_name, wnid = line.split('\t')[:2]
            wnid_of[file_name] = wnid
      for member in archive.namelist():
        if not member.endswith('.JPEG'):
          continue
        parts = member[len(root):].split('/')
        if split == 'train' and len(parts) == 4 and parts[0] == 'train' and parts[2] == 'images':
          wnid = parts[1]
        elif split == 'validation' and len(parts) == 3 and parts[:2] == ['val', 'images']:
          wnid = wnid_of[parts[2]]
        else:
          continue
        yield parts[-1], {'image': archive.read(member), 'label': label(wnid), 'file_name': parts[-1]}


def _root(archive: zipfile.ZipFile) -> str:
  """The folder prefix of `wnids.txt` in the archive ('tiny-imagenet-200/' in the official zip)."""
  for name in archive.namelist():
    if posixpath.basename(name) == 'wnids.txt':
      return name[:-len('wnids.txt')]
  raise ValueError(f'{archive.filename or ARCHIVE} has no wnids.txt: is it the official {ARCHIVE}?')
