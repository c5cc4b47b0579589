//! The `#[actor]` attribute of Francis. Use it through `francis_core::actor` (or
//! `francis::actor`), whose documentation describes what it builds; this crate holds only the
//! code generation.

use proc_macro::TokenStream;
use proc_macro_crate::{FoundCrate, crate_name};
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ImplItem, ImplItemFn, ItemImpl, LitStr, Pat,
    PathArguments, ReturnType, Type, Visibility,
};

/// Turns an `impl` block into a typed actor. See `francis_core::actor`.
#[proc_macro_attribute]
pub fn actor(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// What the attribute's arguments say.
#[derive(Default)]
struct Options {
    /// `name = "..."`: the actor type name.
    name: Option<LitStr>,
    /// `crate = path`: where `francis_core` is.
    krate: Option<syn::Path>,
    /// `error = Type`: what typed callers of methods that fail with `Error` decode.
    error: Option<Type>,
}

fn parse_options(attr: Tokens) -> syn::Result<Options> {
    let mut options = Options::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            options.name = Some(meta.value()?.parse()?);
            Ok(())
        } else if meta.path.is_ident("crate") {
            options.krate = Some(meta.value()?.parse()?);
            Ok(())
        } else if meta.path.is_ident("error") {
            options.error = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            Err(meta.error(
                "unknown #[actor] option; expected `name = \"...\"`, `error = Type` or `crate = path`",
            ))
        }
    });
    syn::parse::Parser::parse2(parser, attr)?;
    Ok(options)
}

/// The path of `francis_core` as the calling crate sees it: its own dependency on
/// `francis-core`, else the `francis` facade's re-export.
fn core_path(options: &Options) -> Tokens {
    if let Some(path) = &options.krate {
        return quote!(#path);
    }
    match crate_name("francis-core") {
        Ok(FoundCrate::Name(name)) => {
            let name = Ident::new(&name, Span::call_site());
            quote!(::#name)
        }
        Ok(FoundCrate::Itself) => quote!(::francis_core),
        Err(_) => match crate_name("francis") {
            Ok(FoundCrate::Name(name)) => {
                let name = Ident::new(&name, Span::call_site());
                quote!(::#name::core)
            }
            _ => quote!(::francis::core),
        },
    }
}

/// Which entry point a method of the block serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// An exclusive turn (`invoke`).
    Invoke,
    /// A shared, read-only turn (`#[peek]`).
    Peek,
    /// The alarm hook (`#[alarm]`).
    Alarm,
    /// The deactivation hook (`#[deactivate]`).
    Deactivate,
}

/// One typed method, as the dispatch and the handle need it.
struct Method {
    ident: Ident,
    wire_name: String,
    read_only: bool,
    takes_ctx: bool,
    args: Vec<Arg>,
    ok: Type,
    err: Option<Type>,
    fallible: bool,
    docs: Vec<Attribute>,
    /// `#[cfg(...)]` attributes, copied to the dispatch arm and the handle method.
    cfgs: Vec<Attribute>,
    vis: Visibility,
}

/// One argument of a typed method.
struct Arg {
    /// The name the dispatch binds the decoded value to (positional, so it never collides).
    binding: Ident,
    /// The name of the handle method's parameter (the user's own).
    param: Ident,
    ty: Type,
}

/// The role a method's attributes give it, with those attributes removed.
fn take_role(f: &mut ImplItemFn) -> syn::Result<Option<Role>> {
    let mut role = None;
    let mut kept = Vec::with_capacity(f.attrs.len());
    for attr in f.attrs.drain(..) {
        let found = if attr.path().is_ident("peek") {
            Some(Role::Peek)
        } else if attr.path().is_ident("alarm") {
            Some(Role::Alarm)
        } else if attr.path().is_ident("deactivate") {
            Some(Role::Deactivate)
        } else {
            None
        };
        match found {
            Some(r) => {
                attr.meta.require_path_only()?;
                if role.is_some() {
                    return Err(syn::Error::new(
                        attr.span(),
                        "a method takes one of #[peek], #[alarm] and #[deactivate]",
                    ));
                }
                role = Some(r);
            }
            None => kept.push(attr),
        }
    }
    f.attrs = kept;
    let is_method = role.is_some()
        || (matches!(f.vis, Visibility::Public(_))
            && f.sig.asyncness.is_some()
            && f.sig.receiver().is_some());
    Ok(if is_method {
        Some(role.unwrap_or(Role::Invoke))
    } else {
        None
    })
}

/// Whether a parameter is the turn's context (`&ActorContext`).
fn is_context(ty: &Type) -> bool {
    let Type::Reference(r) = ty else { return false };
    if r.mutability.is_some() {
        return false;
    }
    let Type::Path(p) = r.elem.as_ref() else {
        return false;
    };
    p.path
        .segments
        .last()
        .is_some_and(|s| s.ident == "ActorContext")
}

/// `(ok type, error type or None for francis_core::Error, whether the method returns Result)`.
fn result_types(output: &ReturnType) -> (Type, Option<Type>, bool) {
    let ty = match output {
        ReturnType::Default => return (syn::parse_quote!(()), None, false),
        ReturnType::Type(_, ty) => ty.as_ref(),
    };
    if let Type::Path(p) = ty
        && let Some(last) = p.path.segments.last()
        && last.ident == "Result"
        && let PathArguments::AngleBracketed(args) = &last.arguments
    {
        let types: Vec<&Type> = args
            .args
            .iter()
            .filter_map(|a| match a {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect();
        match types.as_slice() {
            [ok] => return ((*ok).clone(), None, true),
            [ok, err] => return ((*ok).clone(), Some((*err).clone()), true),
            _ => {}
        }
    }
    (ty.clone(), None, false)
}

fn method_of(f: &ImplItemFn, role: Role) -> syn::Result<Method> {
    let sig = &f.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            "an actor method must be `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "an actor method cannot be generic",
        ));
    }
    let Some(receiver) = sig.receiver() else {
        return Err(syn::Error::new(
            sig.ident.span(),
            "an actor method takes `&self` or `&mut self`",
        ));
    };
    if receiver.reference.is_none() {
        return Err(syn::Error::new(
            receiver.span(),
            "an actor method takes `&self` or `&mut self`, not `self`",
        ));
    }
    if role == Role::Peek && receiver.mutability.is_some() {
        return Err(syn::Error::new(
            receiver.span(),
            "a #[peek] method is read-only: it takes `&self`",
        ));
    }
    let mut takes_ctx = false;
    let mut args = Vec::new();
    for (i, input) in sig.inputs.iter().skip(1).enumerate() {
        let FnArg::Typed(pt) = input else {
            continue;
        };
        if i == 0 && is_context(&pt.ty) {
            takes_ctx = true;
            continue;
        }
        // The handle's parameter keeps the user's name (without `mut`); a pattern that is not a
        // plain name gets a positional one.
        let param = match pt.pat.as_ref() {
            Pat::Ident(p) if p.subpat.is_none() => p.ident.clone(),
            _ => format_ident!("__arg{}", i),
        };
        args.push(Arg {
            binding: format_ident!("__a{}", i),
            param,
            ty: (*pt.ty).clone(),
        });
    }
    let (ok, err, fallible) = result_types(&sig.output);
    let wire_name = sig.ident.to_string().trim_start_matches("r#").to_owned();
    Ok(Method {
        ident: sig.ident.clone(),
        wire_name,
        read_only: role == Role::Peek,
        takes_ctx,
        args,
        ok,
        err,
        fallible,
        docs: f
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .cloned()
            .collect(),
        cfgs: f
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("cfg"))
            .cloned()
            .collect(),
        vis: f.vis.clone(),
    })
}

/// Whether an error type is Francis's own `Error`, by how it is written: `Error`,
/// `francis::Error`, `francis_core::Error`, `francis::core::Error` or
/// `francis::prelude::Error`. (A macro sees names, not types: an error type of the user's own
/// that is also called `Error` is written with its path.)
fn is_francis_error(ty: &Type) -> bool {
    let Type::Path(p) = ty else { return false };
    if p.qself.is_some() {
        return false;
    }
    let names: Vec<String> = p
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    matches!(
        names.as_slice(),
        ["Error"]
            | ["francis" | "francis_core", "Error"]
            | ["francis", "core" | "prelude", "Error"]
    )
}

/// What a method of this name would hide, if anything: an associated function callers use to
/// get a handle, or a method every handle has (`Clone`, `AsRef`, `Debug`).
fn hidden_by(name: &str) -> Option<&'static str> {
    match name {
        "handle" | "handle_for" => {
            Some("`TypedActor::handle`, which callers use to get the actor's handle")
        }
        "clone" | "as_ref" | "fmt" => Some("the handle's `Clone`, `AsRef` or `Debug` method"),
        _ => None,
    }
}

/// `tokens` with every `Self` replaced by the actor type.
fn replace_self(tokens: Tokens, self_ty: &Type) -> Tokens {
    tokens
        .into_iter()
        .map(|tree| match tree {
            proc_macro2::TokenTree::Ident(ident) if ident == "Self" => quote!(#self_ty),
            proc_macro2::TokenTree::Group(group) => {
                let mut inner = proc_macro2::Group::new(
                    group.delimiter(),
                    replace_self(group.stream(), self_ty),
                );
                inner.set_span(group.span());
                quote!(#inner)
            }
            other => quote!(#other),
        })
        .collect()
}

/// `BankAccount` -> `bank_account`.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn expand(attr: Tokens, item: Tokens) -> syn::Result<Tokens> {
    let options = parse_options(attr)?;
    let mut block: ItemImpl = syn::parse2(item)?;
    if let Some((_, path, _)) = &block.trait_ {
        return Err(syn::Error::new(
            path.span(),
            "#[actor] goes on the actor's own `impl` block, not on a trait impl",
        ));
    }
    if !block.generics.params.is_empty() {
        return Err(syn::Error::new(
            block.generics.span(),
            "#[actor] does not support generic actor types",
        ));
    }
    let self_ty = block.self_ty.as_ref().clone();
    let type_ident = match &self_ty {
        Type::Path(p) if p.qself.is_none() => p
            .path
            .segments
            .last()
            .map(|s| s.ident.clone())
            .ok_or_else(|| syn::Error::new(self_ty.span(), "expected a type name"))?,
        _ => {
            return Err(syn::Error::new(
                self_ty.span(),
                "#[actor] goes on `impl TypeName { ... }`",
            ));
        }
    };
    let core = core_path(&options);
    let type_name = options
        .name
        .as_ref()
        .map(LitStr::value)
        .unwrap_or_else(|| snake_case(&type_ident.to_string()));

    let mut methods = Vec::new();
    let mut alarm_hook = None;
    let mut deactivate_hook = None;
    for item in &mut block.items {
        let ImplItem::Fn(f) = item else { continue };
        let Some(role) = take_role(f)? else { continue };
        match role {
            Role::Alarm => {
                if alarm_hook.replace(f.sig.ident.clone()).is_some() {
                    return Err(syn::Error::new(
                        f.sig.ident.span(),
                        "a second #[alarm] hook",
                    ));
                }
            }
            Role::Deactivate => {
                if deactivate_hook.replace(f.sig.ident.clone()).is_some() {
                    return Err(syn::Error::new(
                        f.sig.ident.span(),
                        "a second #[deactivate] hook",
                    ));
                }
            }
            Role::Invoke | Role::Peek => {
                let name = syn::ext::IdentExt::unraw(&f.sig.ident).to_string();
                if let Some(hidden) = hidden_by(&name) {
                    return Err(syn::Error::new(
                        f.sig.ident.span(),
                        format!(
                            "an actor method cannot be called `{name}`: it would hide {hidden}; \
                             rename it"
                        ),
                    ));
                }
                methods.push(method_of(f, role)?)
            }
        }
    }
    for (i, m) in methods.iter().enumerate() {
        if methods[..i].iter().any(|o| o.wire_name == m.wire_name) {
            return Err(syn::Error::new(m.ident.span(), "two methods with one name"));
        }
    }

    let arm = |m: &Method| -> Tokens {
        let name = &m.wire_name;
        let ident = &m.ident;
        let names: Vec<&Ident> = m.args.iter().map(|a| &a.binding).collect();
        let types: Vec<&Type> = m.args.iter().map(|a| &a.ty).collect();
        let cfgs = &m.cfgs;
        let decode = match m.args.len() {
            0 => quote!(),
            1 => quote!(let #(#names)*: #(#types)* = __data.decode()?;),
            _ => quote!(let (#(#names,)*): (#(#types,)*) = __data.decode()?;),
        };
        let ctx = m.takes_ctx.then(|| quote!(__ctx,));
        let err = m
            .err
            .as_ref()
            .map_or_else(|| quote!(#core::Error), |e| quote!(#e));
        let call = quote!(self.#ident(#ctx #(#names),*).await);
        let result = if m.fallible {
            call
        } else {
            quote!(::core::result::Result::Ok::<_, #core::Error>(#call))
        };
        quote! {
            #(#cfgs)*
            #name => {
                #decode
                #core::typed::reply::<_, #err>(#result)
            }
        }
    };
    let invoke_arms: Vec<Tokens> = methods.iter().map(arm).collect();
    let peek_arms: Vec<Tokens> = methods.iter().filter(|m| m.read_only).map(arm).collect();
    let peek = (!peek_arms.is_empty()).then(|| {
        quote! {
            async fn peek(
                &self,
                __ctx: &#core::ActorContext,
                __method: &str,
                __data: #core::Envelope,
            ) -> ::core::result::Result<::core::option::Option<#core::Envelope>, #core::Error> {
                match __method {
                    #(#peek_arms)*
                    _ => ::core::result::Result::Err(
                        #core::typed::unknown_method(__ctx, "peek", __method)
                    ),
                }
            }
        }
    });
    let invoke = (!invoke_arms.is_empty()).then(|| {
        quote! {
            async fn invoke(
                &mut self,
                __ctx: &#core::ActorContext,
                __method: &str,
                __data: #core::Envelope,
            ) -> ::core::result::Result<::core::option::Option<#core::Envelope>, #core::Error> {
                match __method {
                    #(#invoke_arms)*
                    _ => ::core::result::Result::Err(
                        #core::typed::unknown_method(__ctx, "invoke", __method)
                    ),
                }
            }
        }
    });
    let alarm = alarm_hook.map(|hook| {
        quote! {
            async fn alarm(
                &mut self,
                __ctx: &#core::ActorContext,
                __name: &str,
                __data: ::core::option::Option<#core::Envelope>,
            ) -> ::core::result::Result<(), #core::Error> {
                #core::typed::hook(self.#hook(__ctx, __name, __data).await)
            }
        }
    });
    let deactivate = deactivate_hook.map(|hook| {
        quote! {
            async fn deactivate(
                &mut self,
                __ctx: &#core::ActorContext,
            ) -> ::core::result::Result<(), #core::Error> {
                #core::typed::hook(self.#hook(__ctx).await)
            }
        }
    });

    let handle = format_ident!("{}Handle", type_ident);
    let handle_methods = methods.iter().map(|m| {
        let Method {
            ident,
            wire_name,
            read_only,
            args,
            ok,
            docs,
            vis,
            ..
        } = m;
        // What the caller decodes: the method's own error type, or the actor's declared one
        // for a method that fails with Francis's `Error`.
        let err = match (&m.err, &options.error) {
            (Some(own), _) if !is_francis_error(own) => quote!(#own),
            (_, Some(declared)) => quote!(#declared),
            (Some(own), None) => quote!(#own),
            (None, None) => quote!(#core::Error),
        };
        let names: Vec<&Ident> = args.iter().map(|a| &a.param).collect();
        // `Self` means the actor inside its own block, but the handle is another type.
        let types: Vec<Tokens> = args
            .iter()
            .map(|a| {
                let ty = &a.ty;
                replace_self(quote!(#ty), &self_ty)
            })
            .collect();
        let ok = replace_self(quote!(#ok), &self_ty);
        let err = replace_self(err, &self_ty);
        let cfgs = &m.cfgs;
        let encode = match args.len() {
            0 => quote!(::core::result::Result::Ok(#core::Envelope::null())),
            1 => quote!(#core::Envelope::encode(&#(#names)*)),
            _ => quote!(#core::Envelope::encode(&(#(#names,)*))),
        };
        quote! {
            #(#docs)*
            #(#cfgs)*
            #vis async fn #ident(&self, #(#names: #types),*)
                -> ::core::result::Result<#ok, <#err as #core::ActorError>::Call>
            {
                #core::typed::call::<#ok, #err>(
                    &self.service, &self.actor, #wire_name, #read_only, #encode,
                ).await
            }
        }
    });
    let handle_doc = format!(
        "A typed handle of a [`{type_ident}`] actor: one async method per method of the actor. \
         Cheap to clone; get one with `{type_ident}::handle(service, id)`."
    );

    Ok(quote! {
        #block

        #[#core::async_trait]
        impl #core::Actor for #self_ty {
            #invoke
            #peek
            #alarm
            #deactivate
        }

        impl #core::TypedActor for #self_ty {
            const TYPE: &'static str = #type_name;
            type Handle = #handle;

            fn handle_for(service: #core::Service, actor: #core::ActorRef) -> #handle {
                #handle { actor, service }
            }
        }

        #[doc = #handle_doc]
        #[derive(Clone)]
        pub struct #handle {
            actor: #core::ActorRef,
            service: #core::Service,
        }

        impl ::core::fmt::Debug for #handle {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_tuple(::core::stringify!(#handle)).field(&self.actor).finish()
            }
        }

        impl ::core::convert::AsRef<#core::ActorRef> for #handle {
            fn as_ref(&self) -> &#core::ActorRef {
                &self.actor
            }
        }

        #[allow(private_interfaces)]
        impl #handle {
            #(#handle_methods)*
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_snake_case() {
        assert_eq!(snake_case("Counter"), "counter");
        assert_eq!(snake_case("BankAccount"), "bank_account");
        assert_eq!(snake_case("A"), "a");
    }

    #[test]
    fn result_types_are_read_from_the_signature() {
        let (ok, err, fallible) = result_types(&syn::parse_quote!(-> Result<i64, MyError>));
        assert_eq!(quote!(#ok).to_string(), "i64");
        let err = err.expect("an error type");
        assert_eq!(quote!(#err).to_string(), "MyError");
        assert!(fallible);
        let (ok, err, fallible) = result_types(&syn::parse_quote!(-> francis::Result<String>));
        assert_eq!(quote!(#ok).to_string(), "String");
        assert!(err.is_none() && fallible);
        let (ok, err, fallible) = result_types(&syn::parse_quote!(-> u8));
        assert_eq!(quote!(#ok).to_string(), "u8");
        assert!(err.is_none() && !fallible);
        let (ok, _, fallible) = result_types(&ReturnType::Default);
        assert_eq!(quote!(#ok).to_string(), "()");
        assert!(!fallible);
    }

    fn error_of(attr: Tokens, item: Tokens) -> String {
        expand(attr, item).expect_err("an error").to_string()
    }

    #[test]
    fn misuse_is_refused_with_a_clear_message() {
        assert!(error_of(quote!(), quote!(impl Actor for X {})).contains("not on a trait impl"));
        assert!(
            error_of(
                quote!(),
                quote!(impl X { #[peek] pub async fn get(&mut self) {} })
            )
            .contains("read-only")
        );
        assert!(
            error_of(quote!(), quote!(impl X { #[peek] pub fn get(&self) {} }))
                .contains("async fn")
        );
        assert!(
            error_of(quote!(), quote!(impl X { pub async fn get(self) {} })).contains("not `self`")
        );
        assert!(error_of(quote!(color = "red"), quote!(impl X {})).contains("unknown #[actor]"));
        assert!(
            error_of(
                quote!(),
                quote!(
                    impl<T> X<T> {}
                )
            )
            .contains("generic")
        );
    }

    #[test]
    fn helpers_are_left_alone() {
        let out = expand(
            quote!(name = "c"),
            quote!(impl X {
                fn helper(&self) {}
                async fn private(&self) {}
                pub async fn add(&mut self, n: i64) -> i64 { n }
            }),
        )
        .unwrap()
        .to_string();
        assert!(out.contains("\"add\" =>"));
        assert!(!out.contains("\"helper\""));
        assert!(!out.contains("\"private\""));
        assert!(out.contains("const TYPE : & 'static str = \"c\""));
    }

    #[test]
    fn a_method_called_handle_is_refused() {
        let msg = error_of(
            quote!(),
            quote!(impl X { pub async fn handle(&mut self) {} }),
        );
        assert!(msg.contains("TypedActor::handle"), "{msg}");
    }

    #[test]
    fn only_francis_errors_are_taken_for_francis_errors() {
        for francis in [
            "Error",
            "francis::Error",
            "francis_core::Error",
            "francis::core::Error",
        ] {
            let ty: Type = syn::parse_str(francis).unwrap();
            assert!(is_francis_error(&ty), "{francis}");
        }
        for own in ["my::Error", "BankError", "crate::errors::Error"] {
            let ty: Type = syn::parse_str(own).unwrap();
            assert!(!is_francis_error(&ty), "{own}");
        }
    }

    #[test]
    fn self_in_a_signature_names_the_actor_in_the_handle() {
        let ty: Type = syn::parse_quote!(Counter);
        let out = replace_self(quote!(Vec<Option<Self>>), &ty).to_string();
        assert_eq!(out, quote!(Vec<Option<Counter>>).to_string());
    }

    #[test]
    fn argument_names_are_kept_and_bindings_are_positional() {
        let out = expand(
            quote!(),
            quote!(impl X {
                pub async fn put(&mut self, _x: i64, x: i64, r#type: String, mut __: u8) {}
            }),
        )
        .unwrap()
        .to_string();
        assert!(out.contains("__a0"), "{out}");
        assert!(
            out.contains("_x : i64 , x : i64 , r#type : String , __ : u8"),
            "{out}"
        );
    }
}
