//! The `numpy` package: a native package of C and C++ (numpy's sorting,
//! pocketfft and unique use libc++, which the interpreter exports), installed
//! beside lxml and the tests package's extension, all loading into the one
//! `python` in one run; removed, it leaves the others working.
//! Needs `build/packages` with python, tests, lxml and numpy
//! (scripts/test.sh builds them).

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};

fn install_into(dest: &Path, pkgs: &[&str]) {
    install_built(dest, pkgs, "numpy");
}

fn python(dest: &Path, code: &str) -> Output {
    Command::new(dest.join("bin/run"))
        .args(["python", "-c", code])
        .output()
        .unwrap()
}

/// Python with the install's root and a writable /data.
fn python_with_data(dest: &Path, data: &Path, code: &str) -> Output {
    Command::new(dest.join("bin/run"))
        .arg("-m")
        .arg(format!("{}:/:ro", dest.join("root").display()))
        .arg("-m")
        .arg(format!("{}:/data:rw", data.display()))
        .args(["python", "-c", code])
        .output()
        .unwrap()
}

/// What numpy does in the sandbox, exercising each of its compiled parts:
/// the core and ufuncs (C), sorting and unique (C++), linalg (lapack-lite),
/// fft (C++ pocketfft), random (Cython), float128 printing (the C
/// library's long-double printf), errors raised from C, np.save (C that
/// would dup a descriptor), and the metadata pip and importlib read.
const NUMPY_WORKS: &str = r#"
import numpy as np, importlib.machinery, sys
a = np.arange(12, dtype=np.float64).reshape(3, 4)
assert (a @ a.T).tolist() == [[14.0, 38.0, 62.0], [38.0, 126.0, 214.0], [62.0, 214.0, 366.0]]
assert np.allclose(np.linalg.inv(np.array([[4.0, 7.0], [2.0, 6.0]])) @ np.array([[4.0, 7.0], [2.0, 6.0]]), np.eye(2))
assert np.allclose(np.linalg.eigvalsh(np.diag([3.0, 1.0, 2.0])), [1.0, 2.0, 3.0])
assert np.allclose(np.fft.ifft(np.fft.fft(np.arange(8.0))).real, np.arange(8.0))
x = np.random.default_rng(42).permutation(1000)
assert np.sort(x).tolist() == list(range(1000))
assert np.argsort(x)[0] == int(np.where(x == 0)[0][0])
assert np.unique(np.array([3, 1, 3, 2, 1])).tolist() == [1, 2, 3]
assert np.unique(np.array(["b", "a", "b"])).tolist() == ["a", "b"]
assert str(np.longdouble(1) / 3).startswith("0.3333333333333333333333333333333")
assert np.finfo(np.longdouble).bits == 128
try:
    np.ones(3) + np.ones(4)
except ValueError as e:
    assert "could not be broadcast" in str(e)
else:
    raise AssertionError("no broadcast error")
assert np.array([1, 2, 3], dtype=np.int8).astype(np.float32).sum() == 6.0
m = np._core._multiarray_umath
assert m.__file__ == "/python/lib/python3.13/site-packages/numpy/_core/_multiarray_umath.cpython-313-wasm32-wasi.so", m.__file__
assert isinstance(m.__spec__.loader, importlib.machinery.ExtensionFileLoader)
import importlib.metadata as md
assert md.version("numpy") == np.__version__
assert [e.value for e in md.entry_points(group="array_api")] == ["numpy"]
with open("/data/a.npy", "wb") as f:
    np.save(f, a)
assert (np.load("/data/a.npy") == a).all()
print("numpy ok", np.__version__)
"#;

#[test]
fn numpy_works_beside_lxml_and_goes_away_when_removed() {
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().join("sandbox");
    install_into(&dest, &["python", "tests", "lxml", "numpy"]);
    let data = tempfile::tempdir().unwrap();
    let out = python_with_data(&dest, data.path(), NUMPY_WORKS);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "numpy ok 2.5.5\n");

    // DEST/bin/pip counts the package's numpy as installed: a wheel that
    // requires numpy installs from a directory that has no numpy.
    let wheels = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = vec![
        (
            "needsnumpy/__init__.py".into(),
            b"import numpy\nSUM = int(numpy.arange(4).sum())\n".to_vec(),
        ),
        (
            "needsnumpy-1.0.dist-info/METADATA".into(),
            b"Metadata-Version: 2.1\nName: needsnumpy\nVersion: 1.0\nRequires-Dist: numpy>=2.0\n"
                .to_vec(),
        ),
        (
            "needsnumpy-1.0.dist-info/WHEEL".into(),
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
                .to_vec(),
        ),
    ];
    let mut record: String = files
        .iter()
        .map(|(p, d)| format!("{p},sha256={},{}\n", record_hash(d), d.len()))
        .collect();
    record.push_str("needsnumpy-1.0.dist-info/RECORD,,\n");
    let mut entries = files;
    entries.push((
        "needsnumpy-1.0.dist-info/RECORD".into(),
        record.into_bytes(),
    ));
    std::fs::write(
        wheels.path().join("needsnumpy-1.0-py3-none-any.whl"),
        zip_bytes(&entries),
    )
    .unwrap();
    let out = pynbox()
        .env("PYNBOX_PYPI_CACHE", wheels.path().join("cache"))
        .args(["pip", "--dest"])
        .arg(&dest)
        .args(["install", "--no-index", "--no-preinit", "--find-links"])
        .arg(wheels.path())
        .arg("needsnumpy")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&python(&dest, "import needsnumpy; print(needsnumpy.SUM)").stdout),
        "6\n"
    );

    // Three native packages in one run, on the same data.
    let together = "import sys; sys.path.insert(0, '/test/native'); \
        import numpy as np, lxml.etree as et, pynbox_ext; \
        doc = et.XML('<r>' + ''.join(f'<v>{i}</v>' for i in range(5)) + '</r>'); \
        v = np.array([int(e.text) for e in doc.iterfind('v')]); \
        print(int(v.sum()), pynbox_ext.sort_ints([int(i) for i in v[::-1]]))";
    let out = python(&dest, together);
    assert_eq!(
        text(&out.stdout),
        "10 [0, 1, 2, 3, 4]\n",
        "{}",
        text(&out.stderr)
    );

    // test_pynbox imports both native packages in one run when installed.
    let out = Command::new(dest.join("bin/test_pynbox")).output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let out = run(&["remove", &dest.display().to_string(), "numpy"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = python(&dest, "import numpy");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("No module named 'numpy'"));
    let out = python(
        &dest,
        "import lxml.etree; print(lxml.etree.XML('<a/>').tag)",
    );
    assert_eq!(text(&out.stdout), "a\n", "{}", text(&out.stderr));
    assert!(run(&["verify", &dest.display().to_string()])
        .status
        .success());
}

/// numpy's own test suite (numpy.test()'s selection: not the slow ones),
/// inside the sandbox; failures must all be listed in
/// recipes/numpy/known-failures.txt, and every entry must still fail.
#[test]
fn numpy_test_suite_passes_but_for_known_failures() {
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().join("sandbox");
    install_into(&dest, &["python", "numpy"]);
    let out = Command::new(dest.join("bin/test_numpy")).output().unwrap();
    let o = text(&out.stdout);
    let summary = o
        .lines()
        .rev()
        .find(|l| l.starts_with("numpy tests: ") && l.contains("passed"))
        .unwrap_or_default();
    println!("{summary}");
    assert!(
        out.status.success(),
        "{}\n{}",
        o.lines().rev().take(60).collect::<Vec<_>>().join("\n"),
        text(&out.stderr)
    );
    let numbers: Vec<u64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [passed, failed, known, ..] = numbers[..] else {
        panic!("no summary line in:\n{o}");
    };
    assert_eq!(failed, known, "{summary}");
    // The issue's goal: 95% of the tests that run pass.
    assert!(passed * 100 >= (passed + failed) * 95, "{summary}");
    assert!(
        passed > 20_000,
        "far fewer tests ran than numpy has: {summary}"
    );
}
