[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("Colo.Proxy.Tests")]
