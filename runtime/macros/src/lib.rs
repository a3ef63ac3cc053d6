//! The `#[ray::remote]` attribute. It is a thin shell over `ray-codegen`, which the
//! REPL also calls to expand cells before evcxr sees them (rust-analyzer never
//! expands proc macros, so types inferred through them would be unknown).

use proc_macro::TokenStream;

/// Makes a function a Ray remote function: `f.remote(args..)` runs it as a task
/// in a worker process and returns an `ObjectRef` to its result.
///
/// Default options may be given as in Ray's decorator:
/// `#[ray::remote(num_cpus = 2, max_retries = 0, resources(Custom1 = 1))]`.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    ray_codegen::expand(attr.into(), item.into(), ray_codegen::Mode::Program).into()
}
