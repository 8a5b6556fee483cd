"""The documentation's relative links resolve, the README stays a front page, and docs/ holds only pages.

Every relative link of README.md, launch/README.md and docs/*.md (`[text](path)`, `[text](path#anchor)`,
`[text](#anchor)`, images included) must name a file or folder that exists, and an anchor must be a heading of the
markdown file it points into, spelt as GitHub spells heading anchors. External links (http, https, mailto) are not
followed. Links inside code (fenced blocks, inline code spans) are not links.
"""

import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_MAX_LINES = 170

_FENCE = re.compile(r'^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$', flags=re.S | re.M)
_CODE_SPAN = re.compile(r'`[^`\n]*`')
# [text](target) or ![alt](target), the target up to whitespace or ')', an optional "title" after it.
_LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
_HEADING = re.compile(r'^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$', flags=re.M)


def documents():
  return ['README.md', 'launch/README.md'] + sorted(
      os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, 'docs', '*.md')))


def _prose(text):
  """The text without fenced blocks and inline code, where brackets are not links."""
  return _CODE_SPAN.sub('', _FENCE.sub('', text))


def anchor(heading):
  """GitHub's anchor for a heading: its text, lowercase, without punctuation but hyphens, spaces to hyphens."""
  text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', heading)  # a link in a heading counts by its text
  text = re.sub(r'<[^>]+>', '', text).strip().lower()
  text = ''.join(ch for ch in text if ch.isalnum() or ch in ' -_')
  return text.replace(' ', '-')


def anchors(text):
  """The anchors of a markdown text's headings, repeated headings numbered as GitHub numbers them."""
  found, seen = set(), {}
  for _, heading in _HEADING.findall(_FENCE.sub('', text)):
    slug = anchor(heading)
    count = seen.get(slug, 0)
    seen[slug] = count + 1
    found.add(slug if count == 0 else f'{slug}-{count}')
  return found


def links(text):
  """The link targets of a markdown text, outside code."""
  return _LINK.findall(_prose(text))


def broken_links(document, root=ROOT):
  """'document: target (why)' for each relative link of the document (a path under root) that does not resolve."""
  path = os.path.join(root, document)
  with open(path, encoding='utf-8') as f:
    text = f.read()
  broken = []
  for target in links(text):
    if re.match(r'^[a-z][a-z0-9+.-]*:', target, flags=re.I):  # http:, https:, mailto:
      continue
    file_part, _, fragment = target.partition('#')
    linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
    if not os.path.exists(linked):
      broken.append(f'{document}: {target} (no file {os.path.relpath(linked, root)})')
      continue
    if fragment and linked.endswith('.md'):
      with open(linked, encoding='utf-8') as f:
        if fragment not in anchors(f.read()):
          broken.append(f'{document}: {target} (no heading #{fragment} in {os.path.relpath(linked, root)})')
  return broken


def test_every_relative_link_resolves():
  broken = [problem for document in documents() for problem in broken_links(document)]
  assert not broken, 'broken links:\n' + '\n'.join(broken)


def test_the_pages_link_somewhere():
  """The check above reads links at all: the README links into docs/, and each page is linked from somewhere."""
  readme = links(open(os.path.join(ROOT, 'README.md'), encoding='utf-8').read())
  assert any(target.startswith('docs/') for target in readme), readme
  linked = set()
  for document in documents():
    with open(os.path.join(ROOT, document), encoding='utf-8') as f:
      for target in links(f.read()):
        file_part = target.partition('#')[0]
        if file_part and not re.match(r'^[a-z]+:', file_part):
          linked.add(os.path.normpath(os.path.join(os.path.dirname(document), file_part)))
  unlinked = [d for d in documents() if d.startswith('docs/') and d not in linked]
  assert not unlinked, f'pages no document links to: {unlinked}'


def test_the_readme_is_a_front_page():
  with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
    lines = f.read().splitlines()
  assert len(lines) <= README_MAX_LINES, f'README.md has {len(lines)} lines; move detail into docs/'


def test_docs_holds_only_markdown():
  others = [os.path.relpath(os.path.join(folder, name), ROOT)
            for folder, _, names in os.walk(os.path.join(ROOT, 'docs')) for name in names
            if not name.endswith('.md')]
  assert not others, f'generated data and pictures belong in results/, not docs/: {others}'


def test_github_anchors():
  assert anchor('Preflight: compile for a TPU slice or GPU node you do not have') == (
      'preflight-compile-for-a-tpu-slice-or-gpu-node-you-do-not-have')
  assert anchor('TPU and GPU, compiled on a CPU (not run)') == 'tpu-and-gpu-compiled-on-a-cpu-not-run'
  assert anchor('GPU (H100 / H200), measured') == 'gpu-h100--h200-measured'
  assert anchor("The paper's configs") == 'the-papers-configs'
  assert anchor('`multimix_jax.mixing` in [your loop](x.md)') == 'multimix_jaxmixing-in-your-loop'
  assert anchors('# A\n\n## A\n\n```\n# not a heading\n```\n') == {'a', 'a-1'}


def test_the_check_finds_broken_links(tmp_path):
  """The link check can fail: a missing file, a missing anchor in another page and in the page itself."""
  (tmp_path / 'docs').mkdir()
  (tmp_path / 'docs' / 'page.md').write_text('# Page\n\n## A section\n\nText.\n', encoding='utf-8')
  (tmp_path / 'README.md').write_text('\n'.join([
      '# Front',
      '',
      '[fine](docs/page.md), [fine](docs/page.md#a-section), [fine](#front), [external](https://example.com/x#y)',
      '![missing picture](docs/figure.png)',
      '[missing page](docs/nothing.md)',
      '[missing anchor](docs/page.md#no-such-section)',
      '[missing local anchor](#nowhere)',
      '`[in code](docs/nothing_either.md)`',
      '```',
      '[in a block](docs/nor_this.md)',
      '```',
  ]), encoding='utf-8')
  broken = broken_links('README.md', root=str(tmp_path))
  assert [problem.split(' ', 2)[1] for problem in broken] == [
      'docs/figure.png', 'docs/nothing.md', 'docs/page.md#no-such-section', '#nowhere'], broken
