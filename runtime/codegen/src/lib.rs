//! Expansion of `#[ray::remote]`.
//!
//! One implementation serves two callers: the proc macro, for compiled programs, and
//! the REPL's cell pre-expansion, which must hand evcxr plain Rust because
//! rust-analyzer does not expand proc macros and could not infer the type of
//! `square.remote(3)` otherwise. The two differ only in how a worker finds the
//! generated trampoline ([`Mode`]).
//!
//! A remote function `f` becomes a unit struct `f` (so `f.remote(..)` reads like
//! Ray's Python), an options wrapper with Ray's `.options(..)` setters, and an
//! `extern "C"` trampoline that decodes arguments, runs the body and encodes the
//! result.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, FnArg, Item, ItemFn, Lit, Meta, ReturnType, Token, Type};

mod actor;

/// How workers find the trampolines of the expanded code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A compiled program: trampolines are registered in the executable's registry
    /// and found by `module_path::name`.
    Program,
    /// A REPL cell library: trampolines are exported as unmangled symbols, found with
    /// `dlsym` in the cell's library.
    Cell,
}

/// Expands `#[ray::remote(attr)] item`. Errors become `compile_error!`s.
pub fn expand(attr: TokenStream, item: TokenStream, mode: Mode) -> TokenStream {
    let result = syn::parse2::<Item>(item.clone()).and_then(|item| match item {
        Item::Fn(f) => expand_fn(attr, f, mode),
        Item::Struct(s) => actor::expand_struct(attr, s),
        Item::Impl(i) => actor::expand_impl(attr, i, mode),
        other => Err(syn::Error::new(
            other.span(),
            "#[ray::remote] applies to functions (tasks), and to structs and their impl blocks (actors)",
        )),
    });
    match result {
        Ok(ts) => ts,
        Err(e) => {
            let err = e.to_compile_error();
            quote! { #err #item }
        }
    }
}

/// Default options from the attribute's arguments.
#[derive(Default)]
pub(crate) struct DefaultOptions {
    pub(crate) numbers: Vec<(String, Expr)>,
    pub(crate) strings: Vec<(String, Expr)>,
    pub(crate) resources: Vec<(String, Expr)>,
}

pub(crate) fn parse_options(attr: TokenStream, numeric: &[&str], textual: &[&str]) -> syn::Result<DefaultOptions> {
    let mut out = DefaultOptions::default();
    if attr.is_empty() {
        return Ok(out);
    }
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr)?;
    for meta in metas {
        match meta {
            Meta::NameValue(nv) => {
                let key = nv.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
                let v = &nv.value;
                if key == "retry_exceptions" && numeric.contains(&"retry_exceptions") {
                    out.numbers.push((key, syn::parse_quote!(if #v { 1.0 } else { 0.0 })));
                } else if numeric.contains(&key.as_str()) {
                    out.numbers.push((key, syn::parse_quote!((#v) as f64)));
                } else if textual.contains(&key.as_str()) {
                    if !is_str_lit(v) {
                        return Err(syn::Error::new(v.span(), format!("`{key}` takes a string literal")));
                    }
                    out.strings.push((key, v.clone()));
                } else {
                    let mut known: Vec<&str> = numeric.iter().chain(textual).copied().collect();
                    known.push("resources(..)");
                    return Err(syn::Error::new(
                        nv.path.span(),
                        format!("unknown option; expected one of: {}", known.join(", ")),
                    ));
                }
            }
            Meta::List(list) if list.path.is_ident("resources") => {
                let inner = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(list.tokens.clone())?;
                for m in inner {
                    let Meta::NameValue(nv) = m else {
                        return Err(syn::Error::new(m.span(), "expected `Name = amount`"));
                    };
                    let name = match nv.path.get_ident() {
                        Some(i) => i.to_string(),
                        None => {
                            return Err(syn::Error::new(nv.path.span(), "expected a resource name"));
                        }
                    };
                    let v = &nv.value;
                    out.resources.push((name, syn::parse_quote!((#v) as f64)));
                }
            }
            other => {
                return Err(syn::Error::new(other.span(), "expected `key = value` or `resources(..)`"));
            }
        }
    }
    Ok(out)
}

fn is_str_lit(e: &Expr) -> bool {
    matches!(e, Expr::Lit(l) if matches!(l.lit, Lit::Str(_)))
}

/// Options a remote function takes in its attribute.
const TASK_NUMERIC: &[&str] = &["num_cpus", "num_gpus", "memory", "max_retries", "retry_exceptions"];
const TASK_TEXTUAL: &[&str] = &["name"];

/// The argument types of a signature, rejecting what cannot cross processes.
pub(crate) fn owned_arg_types<'a>(
    inputs: impl Iterator<Item = &'a FnArg>,
    allow_receiver: bool,
) -> syn::Result<Vec<Type>> {
    let mut arg_types = Vec::new();
    for input in inputs {
        match input {
            FnArg::Receiver(r) if !allow_receiver => {
                return Err(syn::Error::new(r.span(), "a remote function takes no `self`"));
            }
            FnArg::Receiver(_) => {}
            FnArg::Typed(pt) => {
                if let Type::Reference(r) = &*pt.ty {
                    return Err(syn::Error::new(
                        r.span(),
                        "remote arguments must be owned values (they are sent to another process); \
                         take `T` instead of `&T`",
                    ));
                }
                if let Type::ImplTrait(t) = &*pt.ty {
                    return Err(syn::Error::new(t.span(), "remote arguments need concrete types"));
                }
                arg_types.push((*pt.ty).clone());
            }
        }
    }
    Ok(arg_types)
}

/// How a worker finds one trampoline: a registry entry, or an exported symbol.
pub(crate) fn export(mode: Mode, trampoline: &syn::Ident, key: TokenStream, target: TokenStream) -> TokenStream {
    match mode {
        Mode::Program => quote! {
            #[::ray::__private::linkme::distributed_slice(::ray::__private::TASK_REGISTRY)]
            #[linkme(crate = ::ray::__private::linkme)]
            #[doc(hidden)]
            #[allow(non_upper_case_globals)]
            static #trampoline: ::ray::__private::TaskEntry = ::ray::__private::TaskEntry { key: #key, func: #target };
        },
        Mode::Cell => quote! {
            #[doc(hidden)]
            #[unsafe(no_mangle)]
            #[allow(non_snake_case)]
            pub unsafe extern "C" fn #trampoline(call: *const ::ray::__private::TaskCall) {
                // SAFETY: the host calls trampolines only with a valid TaskCall.
                unsafe { #target(call) }
            }
        },
    }
}

/// The symbol a cell exports for a trampoline (empty in a compiled program).
pub(crate) fn symbol_of(mode: Mode, trampoline: &syn::Ident) -> String {
    match mode {
        Mode::Program => String::new(),
        Mode::Cell => trampoline.to_string(),
    }
}

/// The trampoline's address in this process, for a cell (the host finds the cell
/// library from it); zero in a compiled program.
pub(crate) fn address_of(mode: Mode, trampoline: &syn::Ident) -> TokenStream {
    match mode {
        Mode::Program => quote!(0usize),
        Mode::Cell => quote!((#trampoline as unsafe extern "C" fn(*const ::ray::__private::TaskCall)) as usize),
    }
}

/// `&[("key", value), ..]` pairs for the options helpers.
pub(crate) fn option_pairs(opts: &DefaultOptions) -> (Vec<TokenStream>, Vec<TokenStream>, Vec<TokenStream>) {
    (
        opts.numbers.iter().map(|(k, v)| quote!((#k, #v))).collect(),
        opts.strings.iter().map(|(k, v)| quote!((#k, #v))).collect(),
        opts.resources.iter().map(|(k, v)| quote!((#k, #v))).collect(),
    )
}

fn expand_fn(attr: TokenStream, f: ItemFn, mode: Mode) -> syn::Result<TokenStream> {
    let opts = parse_options(attr, TASK_NUMERIC, TASK_TEXTUAL)?;
    let sig = &f.sig;
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(sig.generics.span(), "remote functions cannot be generic; use concrete types"));
    }
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new(a.span(), "remote functions must not be async; async methods belong to actors"));
    }
    if let Some(v) = &sig.variadic {
        return Err(syn::Error::new(v.span(), "remote functions cannot be variadic"));
    }
    let vis = &f.vis;
    let name = &sig.ident;
    let name_str = name.to_string();
    let options_ty = format_ident!("{}Options", name);
    let trampoline = format_ident!("__ray_task_{}", name);

    let arg_types = owned_arg_types(sig.inputs.iter(), false)?;
    let ret: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    };
    let params: Vec<_> = (0..arg_types.len()).map(|i| format_ident!("arg{}", i)).collect();
    let indexes: Vec<_> = (0..arg_types.len()).collect();

    let inputs = &sig.inputs;
    let body = &f.block;
    let attrs = &f.attrs;
    let unsafety = &sig.unsafety;

    let (numbers, strings, resources) = option_pairs(&opts);
    let span = Span::call_site();
    let symbol_lit = symbol_of(mode, &trampoline);
    let address = address_of(mode, &trampoline);
    let export = export(
        mode,
        &trampoline,
        quote!(::core::concat!(::core::module_path!(), "::", #name_str)),
        quote!(#name::__trampoline),
    );
    Ok(quote_spanned! {span=>
        // A unit struct, so `retrieve.remote(..)` reads like Ray's Python and
        // `retrieve::call(..)` runs the body locally. (Its name is then also a
        // pattern: `let retrieve = ..` does not shadow it; rustc says so.)
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug)]
        #vis struct #name;

        #[allow(non_camel_case_types)]
        #[doc(hidden)]
        #vis struct #options_ty(::ray::Options);

        impl #name {
            /// The function's name, as Ray shows it.
            #vis const NAME: &'static str = #name_str;

            #(#attrs)*
            #[allow(clippy::too_many_arguments)]
            #vis #unsafety fn call(#inputs) -> #ret #body

            /// Runs the function as a task in a worker process and returns a ref to
            /// its result. Each argument may be a value or an `ObjectRef` to one.
            #[allow(clippy::too_many_arguments)]
            #vis fn remote(&self, #(#params: impl ::ray::IntoArg<#arg_types>),*) -> ::ray::ObjectRef<#ret> {
                self.options().remote(#(#params),*)
            }

            /// Per-call options, like Ray's `f.options(num_cpus=2)`.
            #vis fn options(&self) -> #options_ty {
                #options_ty(::ray::__private::default_options(&[#(#numbers),*], &[#(#strings),*], &[#(#resources),*]))
            }

            #[doc(hidden)]
            unsafe extern "C" fn __trampoline(call: *const ::ray::__private::TaskCall) {
                // SAFETY: `call` is the host's valid TaskCall, passed through unchanged.
                unsafe {
                    ::ray::__private::run_task(call, #name_str, |__args| {
                        ::core::result::Result::Ok(#name::call(#(__args.arg::<#arg_types>(#indexes)?),*))
                    })
                }
            }
        }

        impl #options_ty {
            ::ray::__option_setters!();

            /// Submits the call with these options.
            #[allow(clippy::too_many_arguments)]
            #vis fn remote(self, #(#params: impl ::ray::IntoArg<#arg_types>),*) -> ::ray::ObjectRef<#ret> {
                ::ray::__private::submit(
                    ::ray::__private::descriptor(
                        #name_str,
                        ::core::concat!(::core::module_path!(), "::", #name_str),
                        #symbol_lit,
                        #address,
                    ),
                    ::std::vec![#(::ray::IntoArg::<#arg_types>::into_arg(#params)),*],
                    self.0,
                )
            }
        }

        #export
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pretty(ts: TokenStream) -> String {
        prettyplease::unparse(&syn::parse2(ts).expect("expansion parses as a file"))
    }

    #[test]
    fn expands_a_function_into_a_callable_struct() {
        let out = pretty(expand(
            quote!(num_cpus = 2, resources(Custom1 = 1)),
            quote!(
                fn retrieve(item: usize, db: Vec<String>) -> (usize, String) {
                    (item, db[item].clone())
                }
            ),
            Mode::Program,
        ));
        assert!(out.contains("struct retrieve;"), "{out}");
        assert!(out.contains("fn remote("), "{out}");
        assert!(out.contains("TASK_REGISTRY"), "{out}");
        assert!(out.contains("\"num_cpus\""), "{out}");
        assert!(out.contains("\"Custom1\""), "{out}");
        assert!(!out.contains("no_mangle"), "{out}");
    }

    #[test]
    fn cell_mode_exports_an_unmangled_trampoline() {
        let out = pretty(expand(
            quote!(),
            quote!(
                fn square(x: u64) -> u64 {
                    x * x
                }
            ),
            Mode::Cell,
        ));
        assert!(out.contains("no_mangle"), "{out}");
        assert!(out.contains("__ray_task_square"), "{out}");
        assert!(!out.contains("TASK_REGISTRY"), "{out}");
    }

    #[test]
    fn rejects_borrowed_arguments_with_a_clear_error() {
        let out = expand(
            quote!(),
            quote!(
                fn f(x: &str) -> usize {
                    x.len()
                }
            ),
            Mode::Program,
        )
        .to_string();
        assert!(out.contains("compile_error") && out.contains("owned values"), "{out}");
    }

    #[test]
    fn rejects_unknown_options() {
        let out = expand(
            quote!(num_cpu = 2),
            quote!(
                fn f() {}
            ),
            Mode::Program,
        )
        .to_string();
        assert!(out.contains("unknown option"), "{out}");
    }
}
