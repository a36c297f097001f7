[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("Colo.Integration.Tests")]
