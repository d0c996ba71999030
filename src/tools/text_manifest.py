#!/usr/bin/env python3
"""Writes the manifest of source documents (configs/text-manifest.tsv) from this Debian 12 host.

build-contexts and the default corpus read exactly the files the manifest lists, and refuse a missing
or changed one (sha256), so that every machine builds the same contexts and corpus. This tool picks
those files once, by the rules in SOURCES below, from packages that are
  - installed here, in the version a fresh `apt-get install` would give (installed = candidate), and
  - unmodified (each file's md5 equals the one dpkg recorded),
and writes one line per file: source, label, split, package, path, sha256 (the file as installed,
compressed or not). `make deps` installs every package the manifest names.
Run it after a Debian update changed a listed file (build-contexts names it), then commit the new
manifest together with the numbers it gives (the README's part-A tables).

usage: src/tools/text_manifest.py [--out FILE (default configs/text-manifest.tsv)]
"""
import gzip, hashlib, io, os, re, subprocess, sys, tarfile, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INFO = '/var/lib/dpkg/info'
# The build and run dependencies `make deps` installs besides the manifest's packages.
INSTALL_DEPS = os.path.join(ROOT, 'src/tools/install-deps.sh')
FORTUNE_CATEGORIES = ['computers', 'definitions', 'people', 'politics', 'science', 'songs-poems']
CAP = 400  # files per label at most (spread evenly over the sorted candidates)


def is_shell_script(path, text):
    """A '#!' line running sh, bash or dash (directly or through env), or a bash-completion script."""
    if path.startswith('/usr/share/bash-completion/completions/'):
        return True
    first = text.split('\n', 1)[0]
    if not first.startswith('#!'):
        return False
    words = first[2:].split()
    name = os.path.basename(words[0]) if words else ''
    if name == 'env' and len(words) > 1:
        name = words[1]
    return name in ('sh', 'bash', 'dash')


# (source, label, split, packages, path pattern, content test). split: how a file is cut into
# documents: 'file' (one document), '%' (entries ending at lines '%'), 'blank' (paragraphs).
# Packages are named, not taken from whatever is installed, and chosen among those that rarely change
# (most have had no update since Debian 12.0); each one's update can invalidate the manifest.
CHANGELOG_PACKAGES = 'the packages named above and those of src/tools/install-deps.sh'
SOURCES = [
    *[('fortunes', f'fortunes/{c}', '%', ['fortunes'], rf'^/usr/share/games/fortunes/{c}$', None)
      for c in FORTUNE_CATEGORIES],
    ('c-headers', 'c-header', 'file', ['libopenmpi-dev', 'libgcc-12-dev', 'libyaml-dev'], r'\.h$', None),
    ('python', 'python', 'file', ['python3-numpy', 'python3-sklearn', 'python3-matplotlib', 'python3-torch'],
     r'^/usr/lib/python3/dist-packages/.*\.py$', None),
    ('shell', 'shell', 'file', ['bash-completion', 'automake', 'autoconf', 'gzip', 'ucf', 'debianutils'],
     r'^/(usr/)?(s?bin|lib|share)/', is_shell_script),
    ('licenses', 'license', 'file', ['base-files', 'python3-scipy', 'python3-numpy', 'python-matplotlib-data',
                                     'libjs-jquery-ui', 'automake'],
     r'^/usr/share/common-licenses/|/(LICEN[CS]E|COPYING)[^/]*$', None),
    ('man', 'man', 'file', ['manpages', 'manpages-dev'], r'^/usr/share/man/man[1-8]/[^/]+\.gz$', None),
    ('javascript', 'javascript', 'file', ['libjs-jquery-ui', 'libjs-jquery', 'libjs-underscore', 'libjs-sphinxdoc'],
     r'(?<!\.min)\.js$', None),
    ('perl', 'perl', 'file', ['debconf', 'automake', 'autoconf'], r'\.pm$', None),
    ('changelogs', 'changelog', 'file', [CHANGELOG_PACKAGES], r'^/usr/share/doc/[^/]+/changelog\.Debian\.gz$', None),
    # The default corpus (include/dreamstate/data.h): every fortune file, then the Jargon File.
    ('corpus', '-', '%', ['fortunes', 'fortunes-min'], r'^/usr/share/games/fortunes/[^/.]+$', None),
    ('corpus', '-', 'blank', ['jargon-text'], r'^/usr/share/doc/jargon-text/jargon\.txt\.gz$', None),
]
MIN_BYTES = 1024  # a shorter file gives at most two contexts


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def dpkg_file(pkg, ext):
    for name in (pkg, f'{pkg}:amd64'):
        path = f'{INFO}/{name}.{ext}'
        if os.path.exists(path):
            return path
    return None


def install_deps_packages():
    text = open(INSTALL_DEPS).read()
    block = re.search(r'^pkgs=\((.*?)\)', text, re.S | re.M)
    return block.group(1).split()


def versions(pkgs):
    """pkg -> (installed, candidate) version."""
    out = run('apt-cache', 'policy', *sorted(pkgs))
    found, name, installed = {}, None, None
    for line in out.splitlines():
        if line and not line.startswith(' '):
            name = line.rstrip(':').split(':')[0]
        elif line.strip().startswith('Installed:'):
            installed = line.split(':', 1)[1].strip()
        elif line.strip().startswith('Candidate:'):
            found[name] = (installed, line.split(':', 1)[1].strip())
    return found


def candidate_sha256(pkg, tmp):
    """path -> sha256 of the files in the candidate version's .deb (apt-get download)."""
    subprocess.run(['apt-get', 'download', '-qq', pkg], cwd=tmp, check=True, capture_output=True)
    deb = [f for f in os.listdir(tmp) if f.startswith(pkg + '_') and f.endswith('.deb')][0]
    tar = subprocess.run(['dpkg-deb', '--fsys-tarfile', os.path.join(tmp, deb)], check=True, capture_output=True).stdout
    sums = {}
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        for m in t.getmembers():
            if m.isfile():
                sums[m.name.lstrip('.')] = hashlib.sha256(t.extractfile(m).read()).hexdigest()
    return sums


def package_files(pkg):
    """(path, md5) of the regular files dpkg says pkg installed, with their recorded md5."""
    md5 = {}
    sums = dpkg_file(pkg, 'md5sums')
    if sums:
        for line in open(sums, errors='replace'):
            digest, path = line.rstrip('\n').split('  ', 1)
            md5['/' + path] = digest
    for line in open(dpkg_file(pkg, 'list'), errors='replace'):
        path = line.rstrip('\n')
        if path in md5 and os.path.isfile(path) and not os.path.islink(path):
            yield path, md5[path]


def text_of(path):
    data = open(path, 'rb').read()
    if path.endswith('.gz'):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            return None
    if b'\0' in data:
        return None
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError:
        return None


def main():
    out_path = os.path.join(ROOT, 'configs/text-manifest.tsv')
    args = sys.argv[1:]
    if args[:1] == ['--out'] and len(args) == 2:
        out_path = args[1]
    elif args:
        sys.exit(__doc__)
    named = {p for s in SOURCES for p in s[3] if p != CHANGELOG_PACKAGES}
    changelog_packages = [p for p in named | set(install_deps_packages()) if dpkg_file(p, 'list')]
    missing = sorted(p for p in named if not dpkg_file(p, 'list'))
    if missing:
        sys.exit(f'text_manifest.py: not installed: {" ".join(missing)} (apt-get install them first)')
    version = versions(named | set(changelog_packages))
    rows, report = [], []
    with tempfile.TemporaryDirectory() as tmp:
        candidate = {}  # pkg -> the candidate's sha256 per path, for packages not at their candidate
        for source, label, split, packages, pattern, test in SOURCES:
            pkgs = sorted(changelog_packages if packages == [CHANGELOG_PACKAGES] else packages)
            found, seen = [], set()
            for pkg in pkgs:
                installed, cand = version[pkg]
                if installed != cand and pkg not in candidate:
                    candidate[pkg] = candidate_sha256(pkg, tmp)
                    print(f'{pkg}: installed {installed}, candidate {cand}: only files equal in both are used')
                for path, md5 in package_files(pkg):
                    if path in seen or not re.search(pattern, path):
                        continue
                    data = open(path, 'rb').read()
                    sha = hashlib.sha256(data).hexdigest()
                    if hashlib.md5(data).hexdigest() != md5 or candidate.get(pkg, {path: sha}).get(path) != sha:
                        continue  # changed here since dpkg installed it, or changed in the candidate
                    text = text_of(path)
                    if text is None or (split == 'file' and len(text.encode()) < MIN_BYTES):
                        continue
                    if test and not test(path, text):
                        continue
                    seen.add(path)
                    found.append((path, pkg, sha))
            found.sort()
            if source != 'corpus' and len(found) > CAP:
                found = [found[i * len(found) // CAP] for i in range(CAP)]
            if not found:
                sys.exit(f'text_manifest.py: {label}: no file matches')
            rows += [(source, label, split, pkg, path, sha) for path, pkg, sha in found]
            report.append(f'{source:11s} {label:22s} {len(found):5d} files from {len({f[1] for f in found})} packages')
    tmp = f'{out_path}.tmp.{os.getpid()}'
    with open(tmp, 'w') as f:
        f.write('# The source documents of build-contexts and the default corpus: nothing else is read, and a\n'
                '# missing or changed file is refused (sha256). Written by src/tools/text_manifest.py; `make deps`\n'
                '# installs every package named here. split: file = one document, % = entries ending at lines\n'
                '# "%", blank = paragraphs. Columns (tab-separated):\n'
                '# source\tlabel\tsplit\tpackage\tpath\tsha256\n')
        for r in rows:
            f.write('\t'.join(r) + '\n')
    os.replace(tmp, out_path)
    print('\n'.join(report))
    print(f'{len(rows)} files from {len({r[3] for r in rows})} packages -> {out_path}')


if __name__ == '__main__':
    main()
