//! Expansion of `#[ray::remote]` on an actor struct and on its impl block.
//!
//! The struct gets a handle type (`CounterHandle`, also `ActorHandle<Counter>`) and
//! an options builder; the impl block gets `Counter::remote(..)` (which runs `new` in
//! a new worker), one method on the handle per method with a `self` receiver, and a
//! trampoline per method. The two expansions meet only by naming convention, since
//! each attribute sees one item.

use crate::{Mode, address_of, export, option_pairs, owned_arg_types, parse_options, symbol_of};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, ImplItemFn, ItemImpl, ItemStruct, ReturnType, Type};

const ACTOR_NUMERIC: &[&str] =
    &["num_cpus", "num_gpus", "memory", "max_concurrency", "max_restarts", "max_task_retries"];
const ACTOR_TEXTUAL: &[&str] = &["name", "namespace", "lifetime"];

fn handle_ident(class: &syn::Ident) -> syn::Ident {
    format_ident!("{}Handle", class)
}

fn options_ident(class: &syn::Ident) -> syn::Ident {
    format_ident!("{}ActorOptions", class)
}

/// `#[ray::remote(max_restarts = 2, ..)] struct Counter { .. }`.
pub(crate) fn expand_struct(attr: TokenStream, item: ItemStruct) -> syn::Result<TokenStream> {
    if !item.generics.params.is_empty() {
        return Err(syn::Error::new(item.generics.span(), "actor types cannot be generic; use concrete types"));
    }
    let opts = parse_options(attr, ACTOR_NUMERIC, ACTOR_TEXTUAL)?;
    let (numbers, strings, resources) = option_pairs(&opts);
    let class = &item.ident;
    let vis = &item.vis;
    let class_str = class.to_string();
    let handle = handle_ident(class);
    let options = options_ident(class);
    // Items only, no macro calls: evcxr keeps a cell's items by name for later
    // cells and would drop an item-position macro call.
    Ok(quote! {
        #item

        /// A handle to a remote actor; clone it, send it to tasks, call its methods.
        #[derive(Clone, PartialEq, Eq, Hash)]
        #vis struct #handle(::ray::__private::ActorRef);

        impl ::ray::actor::Handle for #handle {
            fn actor_ref(&self) -> &::ray::__private::ActorRef {
                &self.0
            }
            fn from_actor_ref(r: ::ray::__private::ActorRef) -> Self {
                #handle(r)
            }
        }

        impl ::core::fmt::Debug for #handle {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::write!(f, "Actor({}, {})", self.0.class, self.0.id)
            }
        }

        impl ::ray::__private::serde::Serialize for #handle {
            fn serialize<S: ::ray::__private::serde::Serializer>(&self, s: S) -> ::core::result::Result<S::Ok, S::Error> {
                ::ray::__private::serde::Serialize::serialize(&self.0, s)
            }
        }

        impl<'de> ::ray::__private::serde::Deserialize<'de> for #handle {
            fn deserialize<D: ::ray::__private::serde::Deserializer<'de>>(d: D) -> ::core::result::Result<Self, D::Error> {
                <::ray::__private::ActorRef as ::ray::__private::serde::Deserialize>::deserialize(d).map(#handle)
            }
        }

        impl ::ray::Actor for #class {
            type Handle = #handle;
            const CLASS: &'static str = #class_str;
        }

        /// Options for creating this actor, like Ray's `Actor.options(..)`.
        #[allow(non_camel_case_types)]
        #vis struct #options(::ray::ActorOptions);

        impl #options {
            ::ray::__actor_option_setters!();
        }

        impl #class {
            /// Options for creating the actor: name, restarts, concurrency, resources.
            #vis fn options() -> #options {
                #options(::ray::__private::default_actor_options(&[#(#numbers),*], &[#(#strings),*], &[#(#resources),*]))
            }
        }
    })
}

enum Receiver {
    Shared,
    Exclusive,
}

struct Method<'a> {
    f: &'a ImplItemFn,
    receiver: Receiver,
    args: Vec<Type>,
    ret: Type,
}

fn method_of(f: &ImplItemFn) -> syn::Result<Option<Method<'_>>> {
    let Some(FnArg::Receiver(r)) = f.sig.inputs.first() else { return Ok(None) };
    if r.reference.is_none() {
        return Err(syn::Error::new(r.span(), "actor methods take `&self` or `&mut self`; the actor keeps its state"));
    }
    if !f.sig.generics.params.is_empty() {
        return Err(syn::Error::new(f.sig.generics.span(), "actor methods cannot be generic"));
    }
    let receiver = if r.mutability.is_some() { Receiver::Exclusive } else { Receiver::Shared };
    let args = owned_arg_types(f.sig.inputs.iter(), true)?;
    let ret = match &f.sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    };
    Ok(Some(Method { f, receiver, args, ret }))
}

/// `#[ray::remote] impl Counter { fn new() -> Self { .. } fn increment(&mut self) -> i64 { .. } }`.
pub(crate) fn expand_impl(attr: TokenStream, item: ItemImpl, mode: Mode) -> syn::Result<TokenStream> {
    if !attr.is_empty() {
        return Err(syn::Error::new(attr.span(), "put actor options on the struct, not the impl block"));
    }
    if let Some((_, path, _)) = &item.trait_ {
        return Err(syn::Error::new(
            path.span(),
            "#[ray::remote] goes on the actor's own impl block, not a trait impl",
        ));
    }
    if !item.generics.params.is_empty() {
        return Err(syn::Error::new(item.generics.span(), "actor types cannot be generic"));
    }
    let class = match &*item.self_ty {
        Type::Path(p) if p.qself.is_none() && p.path.segments.len() == 1 => p.path.segments[0].ident.clone(),
        other => return Err(syn::Error::new(other.span(), "expected the actor's type name")),
    };
    let class_str = class.to_string();
    let handle = handle_ident(&class);
    let options = options_ident(&class);

    let functions: Vec<&ImplItemFn> =
        item.items.iter().filter_map(|i| if let ImplItem::Fn(f) = i { Some(f) } else { None }).collect();
    let constructor = functions.iter().find(|f| f.sig.ident == "new").ok_or_else(|| {
        syn::Error::new(item.self_ty.span(), "an actor needs a constructor `fn new(..) -> Self` in this impl block")
    })?;
    if let Some(FnArg::Receiver(r)) = constructor.sig.inputs.first() {
        return Err(syn::Error::new(r.span(), "the constructor `new` takes no `self`"));
    }
    let ctor_args = owned_arg_types(constructor.sig.inputs.iter(), false)?;
    let ctor_params: Vec<_> = (0..ctor_args.len()).map(|i| format_ident!("arg{}", i)).collect();
    let ctor_indexes: Vec<_> = (0..ctor_args.len()).collect();

    let mut methods = Vec::new();
    for f in &functions {
        if let Some(m) = method_of(f)? {
            methods.push(m);
        }
    }
    let is_async = methods.iter().any(|m| m.f.sig.asyncness.is_some());

    let ctor_tramp = format_ident!("__ray_actor_{}___new", class);
    let ctor_symbol = symbol_of(mode, &ctor_tramp);
    let ctor_address = address_of(mode, &ctor_tramp);
    let ctor_key = quote!(::core::concat!(::core::module_path!(), "::", #class_str, "::new"));
    let mut exports = vec![export(mode, &ctor_tramp, ctor_key.clone(), quote!(#class::__ray_new))];
    let mut trampolines = Vec::new();
    let mut handle_methods = Vec::new();

    for m in &methods {
        let name = &m.f.sig.ident;
        let name_str = name.to_string();
        let display = format!("{class_str}.{name_str}");
        let tramp_fn = format_ident!("__ray_m_{}", name);
        let tramp = format_ident!("__ray_actor_{}_{}", class, name);
        let symbol = symbol_of(mode, &tramp);
        let key = quote!(::core::concat!(::core::module_path!(), "::", #class_str, "::", #name_str));
        exports.push(export(mode, &tramp, key.clone(), quote!(#class::#tramp_fn)));
        let args = &m.args;
        let ret = &m.ret;
        let params: Vec<_> = (0..args.len()).map(|i| format_ident!("arg{}", i)).collect();
        let indexes: Vec<_> = (0..args.len()).collect();
        // A private method still belongs on the handle for code in this crate.
        let vis = match &m.f.vis {
            syn::Visibility::Inherited => quote!(pub(crate)),
            v => quote!(#v),
        };
        let docs: Vec<_> = m.f.attrs.iter().filter(|a| a.path().is_ident("doc")).collect();
        handle_methods.push(quote! {
            #(#docs)*
            #[allow(clippy::too_many_arguments)]
            #vis fn #name(&self, #(#params: impl ::ray::IntoArg<#args>),*) -> ::ray::ObjectRef<#ret> {
                ::ray::__private::call_actor(
                    &self.0,
                    ::ray::__private::descriptor(#display, #key, #symbol, 0),
                    ::std::vec![#(::ray::IntoArg::<#args>::into_arg(#params)),*],
                )
            }
        });
        let body = match (m.f.sig.asyncness.is_some(), &m.receiver) {
            (false, Receiver::Shared) => quote! {
                ::ray::__private::run_actor_ref::<#class, #ret, _>(call, #display, |this, __args| {
                    ::core::result::Result::Ok(this.#name(#(__args.arg::<#args>(#indexes)?),*))
                })
            },
            (false, Receiver::Exclusive) => quote! {
                ::ray::__private::run_actor_mut::<#class, #ret, _>(call, #display, |this, __args| {
                    ::core::result::Result::Ok(this.#name(#(__args.arg::<#args>(#indexes)?),*))
                })
            },
            (true, receiver) => {
                let guard = match receiver {
                    Receiver::Shared => quote!(let this = cell.read().await;),
                    Receiver::Exclusive => quote!(let mut this = cell.write().await;),
                };
                quote! {
                    ::ray::__private::run_actor_async::<#class, #ret, _, _>(call, #display, |cell, __args| async move {
                        #(let #params = __args.arg::<#args>(#indexes)?;)*
                        #guard
                        ::core::result::Result::Ok(this.#name(#(#params),*).await)
                    })
                }
            }
        };
        trampolines.push(quote! {
            #[doc(hidden)]
            #[allow(non_snake_case)]
            unsafe extern "C" fn #tramp_fn(call: *const ::ray::__private::TaskCall) {
                // SAFETY: `call` is the host's valid TaskCall, passed through unchanged.
                unsafe { #body }
            }
        });
    }

    Ok(quote! {
        #item

        impl #class {
            /// Creates the actor in its own worker process, running `new` there, like
            /// Ray's `Actor.remote(..)`.
            #[allow(clippy::too_many_arguments)]
            pub fn remote(#(#ctor_params: impl ::ray::IntoArg<#ctor_args>),*) -> ::core::result::Result<#handle, ::ray::RayError> {
                Self::options().remote(#(#ctor_params),*)
            }

            #[doc(hidden)]
            unsafe extern "C" fn __ray_new(call: *const ::ray::__private::TaskCall) {
                // SAFETY: `call` is the host's valid TaskCall, passed through unchanged.
                unsafe {
                    ::ray::__private::run_actor_constructor::<#class, _>(call, #class_str, |__args| {
                        ::core::result::Result::Ok(#class::new(#(__args.arg::<#ctor_args>(#ctor_indexes)?),*))
                    })
                }
            }

            #(#trampolines)*
        }

        impl #options {
            /// Creates the actor with these options.
            #[allow(clippy::too_many_arguments)]
            pub fn remote(self, #(#ctor_params: impl ::ray::IntoArg<#ctor_args>),*) -> ::core::result::Result<#handle, ::ray::RayError> {
                ::ray::__private::create_actor::<#class>(
                    ::ray::__private::descriptor(#class_str, #ctor_key, #ctor_symbol, #ctor_address),
                    ::std::vec![#(::ray::IntoArg::<#ctor_args>::into_arg(#ctor_params)),*],
                    self.0,
                    #is_async,
                )
            }
        }

        impl #handle {
            #(#handle_methods)*
        }

        #(#exports)*
    })
}
