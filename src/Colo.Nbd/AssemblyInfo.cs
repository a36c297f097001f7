[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("Colo.Nbd.Tests")]
