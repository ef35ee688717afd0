"""`--help` of every console script prints its usage and exits 0. The commands are read from setup.cfg's
`[options.entry_points]`, so a new command is covered as soon as its entry point is declared."""
import configparser
import os.path as osp
import subprocess
import sys
import pytest

from conftest import REPO, run_cli

# a couple of each known command's options that its help must name; a command not listed here must name --help
OPTIONS = {
    'dupru-train': ('-opt', '--auto_resume', '--launcher', '--force_yml'),
    'dupru-test': ('-opt', '--launcher', '--allow-random-weights'),
    'dupru-prepare': ('--input', '--out', '--scales'),
    'dupru-compare': ('--datasets', '--dataset-dirs', '--out'),
    'dupru-demo': ('--out', '--budget', '--device'),
    'dupru-export': ('--out', '--onnx', '--mnn'),
    'dupru-study': ('--preset', '--train-hr', '--out'),
    'dupru-register': ('--fix-torchvision', '--remove', 'checkout'),
}


def console_scripts():
    """[(command, module, function)] of setup.cfg's console_scripts."""
    config = configparser.ConfigParser()
    config.read(osp.join(REPO, 'setup.cfg'))
    scripts = []
    for line in config['options.entry_points']['console_scripts'].strip().splitlines():
        name, _, target = (part.strip() for part in line.partition('='))
        module, _, function = target.partition(':')
        scripts.append((name, module, function))
    return scripts


def test_setup_cfg_declares_the_commands():
    names = [name for name, _, _ in console_scripts()]
    assert set(OPTIONS) <= set(names), names
    assert all(name.startswith('dupru-') for name in names), names


@pytest.mark.parametrize('name, module, function', console_scripts(), ids=[s[0] for s in console_scripts()])
def test_help_prints_usage_and_exits_0(tmp_path, name, module, function):
    # run_cli calls `dupru_basicsr.<module>.main()` with sys.argv[0] = 'dupru-<module>', as the console script does
    assert module.startswith('dupru_basicsr.') and function == 'main', f'{name} = {module}:{function}'
    short = module[len('dupru_basicsr.'):]
    assert name == f'dupru-{short}', f'{name} runs {module}; run_cli names it dupru-{short}'
    result = run_cli(short, ['--help'], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f'usage: {name} '), result.stdout[:500]
    missing = [option for option in OPTIONS.get(name, ('--help', )) if option not in result.stdout]
    assert not missing, f'{name} --help does not name {missing}:\n{result.stdout}'
    assert result.stderr == ''
    assert list(tmp_path.iterdir()) == []  # help writes nothing


def test_train_usage_error_reaches_stderr_with_nothing_on_stdout(tmp_path):
    result = run_cli('train', ['--no-such-flag'], tmp_path)
    assert result.returncode == 2
    assert result.stdout == ''  # BasicSR's prints stay held: the parser stopped before any
    assert result.stderr.startswith('usage: dupru-train ') and 'dupru-train: error:' in result.stderr


@pytest.mark.slow
def test_installed_dupru_train_console_script_prints_its_help(tmp_path):
    script = osp.join(osp.dirname(sys.executable), 'dupru-train')
    if not osp.isfile(script):
        import shutil
        script = shutil.which('dupru-train')
    assert script, 'dupru-train is not installed (pip install -e .)'
    proc = subprocess.run([script, '--help'], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith('usage: dupru-train ') and '-opt OPT' in proc.stdout and '--auto_resume' in \
        proc.stdout, proc.stdout
    assert 'Disable distributed.' not in proc.stdout
    assert list(tmp_path.iterdir()) == []
