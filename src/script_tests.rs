//! One macro for every data-driven test: a `#[test]` per goldenscript file,
//! and a test that every file in the directory is listed. Used by the ring's
//! and the vclock's scripts (`#[macro_use]` in `lib.rs`, tests only) and by
//! the simulation's scenarios (`tests/sim/main.rs` includes this file).

/// `script_tests!(run, "dir/under/the/crate", { test_name => "file.txt", ... })`:
/// each `test_name` runs `run("file.txt")`; `every_script_file_is_a_test`
/// fails for a file in the directory that is not listed.
macro_rules! script_tests {
    ($run:path, $dir:literal, { $($name:ident => $file:literal,)* }) => {
        $(
            #[test]
            fn $name() {
                $run($file);
            }
        )*

        /// Every file in the script directory runs as a test of its own.
        #[test]
        fn every_script_file_is_a_test() {
            let listed = [$($file),*];
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join($dir);
            for entry in std::fs::read_dir(dir).unwrap() {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                assert!(listed.contains(&name.as_str()), "{name} is not listed in {}", file!());
            }
        }
    };
}
