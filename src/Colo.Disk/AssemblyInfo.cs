[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("Colo.Disk.Tests")]
