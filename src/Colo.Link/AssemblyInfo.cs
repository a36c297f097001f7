[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("Colo.Link.Tests")]
